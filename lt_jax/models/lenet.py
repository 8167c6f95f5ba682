"""The modified LeNet of MFM (Wang et al., Table 6) for 28x28 grayscale images (Fashion-MNIST-LT).

conv1 5x5 pad 2 (6) -> ReLU -> maxpool 2 -> conv2 5x5 valid (16) -> ReLU -> maxpool 2 -> conv3 3x3
valid (120; the paper's change from 5x5) -> ReLU -> global average pool -> fc1 (84) -> ReLU -> fc2 (C).
On 28x28 inputs the maps are 28 -> 14 -> 10 -> 5 -> 3 -> GAP; 30,986 parameters for 10 classes.

Width rule: ``width`` w is conv1's channel count (6 by default) and every other count scales by
w / 6, rounded half up, at least 1: (6, 16, 120, 84) w / 6. So w = 6 is the paper's network and
w = 4 (``:smoke``) gives (4, 11, 80, 56).

Initialisation is PyTorch's default (U(+-1/sqrt(fan_in)) for weights and biases), since the paper
does not change it. There is no BatchNorm, so the variables hold ``params`` only and no
``batch_stats`` (callers use ``variables.get('batch_stats', {})``).

Modulation points (after the ReLU): ``conv1``, ``conv2``, ``conv3`` channel-wise, ``fc1``
neuron-wise. ``return_features=True`` returns the (modulated) fc1 activations as an (N, 1, 1, fc1)
map: the features whose spatial mean times the last layer's weights gives the logits, the contract
shared with the ResNets (conv3's map is followed by fc1 too, so it would not fit that contract).
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from lt_jax.models import layers

BASE_WIDTH = 6
PAPER_COUNTS = (6, 16, 120, 84)  # conv1, conv2, conv3, fc1


def channel_counts(width: int) -> tuple[int, int, int, int]:
  """(conv1, conv2, conv3, fc1) sizes for base width w: round-half-up(count * w / 6), at least 1."""
  return tuple(max(1, (count * width + BASE_WIDTH // 2) // BASE_WIDTH) for count in PAPER_COUNTS)


def torch_conv(features: int, kernel: int, padding, in_channels: int, dtype, name: str) -> nn.Conv:
  """kernel x kernel conv with bias and PyTorch's default init."""
  fan_in = kernel * kernel * in_channels
  return nn.Conv(features, (kernel, kernel), padding=padding,
                 kernel_init=layers.torch_default_kernel_init,
                 bias_init=layers.torch_uniform_init(fan_in), dtype=dtype, name=name)


class LeNet(nn.Module):
  """Modified LeNet (MFM Table 6); ``width`` scales the channel and neuron counts (module docstring)."""
  num_classes: int
  width: int = BASE_WIDTH
  classifier: str = "linear"
  dtype: Optional[Any] = None

  def modulation_points(self) -> dict[str, int]:
    """{point: channels or neurons}: conv1, conv2, conv3, fc1."""
    return dict(zip(("conv1", "conv2", "conv3", "fc1"), channel_counts(self.width)))

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: layers.Modulation = None,
               return_features: bool = False):
    """Logits (N, C), or (logits, fc1 features as an (N, 1, 1, fc1) map); ``train`` is unused."""
    del train  # no BatchNorm or dropout
    points = self.modulation_points()
    layers.check_modulation(modulation, points)
    c1, c2, c3, f1 = points.values()
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    x = nn.relu(torch_conv(c1, 5, ((2, 2), (2, 2)), x.shape[-1], self.dtype, "conv1")(x))
    x = nn.max_pool(layers.modulate(x, modulation, "conv1"), (2, 2), strides=(2, 2))
    x = nn.relu(torch_conv(c2, 5, "VALID", c1, self.dtype, "conv2")(x))
    x = nn.max_pool(layers.modulate(x, modulation, "conv2"), (2, 2), strides=(2, 2))
    x = nn.relu(torch_conv(c3, 3, "VALID", c2, self.dtype, "conv3")(x))
    x = jnp.mean(layers.modulate(x, modulation, "conv3"), axis=(1, 2))
    x = nn.relu(nn.Dense(f1, kernel_init=layers.torch_default_kernel_init,
                         bias_init=layers.torch_uniform_init(c3), dtype=self.dtype, name="fc1")(x))
    x = layers.modulate(x, modulation, "fc1")
    logits = layers.Classifier(self.num_classes, self.classifier,
                               kernel_init=layers.torch_default_kernel_init,
                               dtype=self.dtype, name="classifier")(x)
    logits = logits.astype(layers.output_dtype(logits))
    return (logits, x[:, None, None, :]) if return_features else logits
