"""VGG-11 (+BN) for 224-pixel images (torchvision layout): model names ``vgg11``, ``vgg11_bn``,
and MFM's MIT-67 VGG-11 ``vgg11_gap``.

VGG-11 (configuration A, Simonyan & Zisserman 2015; torchvision ``vgg11`` / ``vgg11_bn``): eight
3x3 convs (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; M = max-pool 2x2), adaptive
average pooling to 7x7, then ``fc6`` (25088 -> 4096)-ReLU-dropout, ``fc7`` (4096 -> 4096)-ReLU-
dropout and the ``classifier`` (4096 -> C). Its classifier therefore reads fc7, not the pooled
feature map: ``return_features`` still returns the map before pooling.

``vgg11_gap`` (``head='gap'``; MFM line 204: "a pre-trained VGG-11 (only reserving the last FC
layer and adding an average-pooling before it)"): the same convs and max-pools, then global
average pooling and the ``classifier`` (512 -> C); no fc6 / fc7. Its modulation points are the
convs only (``conv8``, after the last conv's ReLU, is "the last convolution layer").

Interface as ``resnet_cifar.ResNet`` (no ``from_stage`` / ``to_stage``): ``__call__(x, train,
modulation=None, return_features=False)``, ``modulation_points()``, head ``Classifier`` named
``classifier``, optional compute ``dtype`` (parameters stay float32). Names match
``convert_torchvision``'s mapping from torchvision's state_dict keys. Convs use kaiming-normal fan_in
weights and zero biases, fc6 / fc7 / classifier weights N(0, 0.01^2) and zero biases (torchvision's).
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lt_jax.models import layers

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG_POOLED_SIZE = 7
VGG_HIDDEN = 4096
HEADS = ("fc", "gap")  # fc: adaptive pool 7x7, fc6, fc7, classifier | gap: global average pool, classifier


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """torch.nn.AdaptiveAvgPool2d(size) on (N, H, W, C): output cell i averages rows
  [floor(i H / size), ceil((i + 1) H / size)) (and likewise columns); the identity at H = W = size.
  """
  height, width = x.shape[1:3]
  if (height, width) == (size, size):
    return x

  def bounds(n):
    return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

  rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bounds(height)]  # size x (N, W, C)
  x = jnp.stack(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2) for a, b in bounds(width)]
  return jnp.stack(cols, axis=2)


class VGG(nn.Module):
  """VGG (torchvision layout): 3x3 convs (+BN) and max-pools, adaptive pool 7x7, fc6, fc7, classifier.

  Attributes:
    num_classes: C.
    plan: channels per conv at width 64, ``"M"`` for a 2x2 max-pool (``VGG11_LAYERS``).
    width: base width w; every conv and the fc6 / fc7 widths scale by w / 64 (64 = torchvision).
    batch_norm: BN after every conv (torchvision ``vgg11_bn``).
    dropout: dropout rate after fc6 and fc7 in training (torchvision: 0.5). The shared training
      loop passes no ``dropout`` rng, so it needs 0; > 0 needs ``rngs={'dropout': key}``.
    classifier: ``linear`` or ``cosine``.
    head: ``fc`` (torchvision: fc6, fc7, classifier) or ``gap`` (global average pool, classifier).
    dtype: compute dtype.
  """
  num_classes: int
  plan: Sequence[Any] = VGG11_LAYERS
  width: int = 64
  batch_norm: bool = False
  dropout: float = 0.0
  classifier: str = "linear"
  head: str = "fc"
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  def scaled(self, channels: int) -> int:
    """``channels`` at width 64 scaled to this model's width."""
    return max(1, channels * self.width // 64)

  def modulation_points(self) -> dict[str, int]:
    """{point: channels}: ``convK`` (after conv K's ReLU) for every conv, then ``fc6``, ``fc7``
    (``head='fc'`` only)."""
    convs = [self.scaled(c) for c in self.plan if c != "M"]
    points = {f"conv{k}": c for k, c in enumerate(convs, start=1)}
    if self.head == "fc":
      points.update(fc6=self.scaled(VGG_HIDDEN), fc7=self.scaled(VGG_HIDDEN))
    return points

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: layers.Modulation = None,
               return_features: bool = False):
    """Logits (N, C), or (logits, features) with features the last conv block's map before pooling."""
    layers.check_modulation(modulation, self.modulation_points())
    if self.head not in HEADS:
      raise ValueError(f"head={self.head!r} is unknown; expected one of {list(HEADS)}")
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    k = 0
    for channels in self.plan:
      if channels == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      k += 1
      x = nn.Conv(self.scaled(channels), (3, 3), padding=((1, 1), (1, 1)),
                  kernel_init=layers.kaiming_normal, bias_init=nn.initializers.zeros,
                  dtype=self.dtype, name=f"conv{k}")(x)
      if self.batch_norm:
        x = layers.batch_norm(train, self.dtype, f"bn{k}", self.bn_axis)(x)
      x = layers.modulate(nn.relu(x), modulation, f"conv{k}")
    features = x
    if self.head == "gap":
      x = jnp.mean(x, axis=(1, 2))
    else:
      x = adaptive_avg_pool(x, VGG_POOLED_SIZE).reshape(x.shape[0], -1)  # (h, w, c) order
      for name in ("fc6", "fc7"):
        x = nn.Dense(self.scaled(VGG_HIDDEN), kernel_init=nn.initializers.normal(0.01),
                     bias_init=nn.initializers.zeros, dtype=self.dtype, name=name)(x)
        x = layers.modulate(nn.relu(x), modulation, name)
        if self.dropout:
          x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = layers.Classifier(self.num_classes, self.classifier,
                               kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                               name="classifier")(x)
    logits = logits.astype(layers.output_dtype(logits))
    return (logits, features) if return_features else logits


def vgg11(num_classes: int, width: int = 64, batch_norm: bool = False, dropout: float = 0.0,
          classifier: str = "linear", dtype: Optional[layers.Dtype] = None,
          bn_axis: Optional[str] = None, head: str = "fc") -> VGG:
  """VGG-11 (configuration A), optionally with BatchNorm (torchvision ``vgg11_bn``); ``head='gap'``
  keeps only the last FC after a global average pool (MFM's MIT-67 network)."""
  return VGG(num_classes, plan=VGG11_LAYERS, width=width, batch_norm=batch_norm,
             dropout=dropout, classifier=classifier, head=head, dtype=dtype, bn_axis=bn_axis)
