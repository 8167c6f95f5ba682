"""224-pixel backbones: ImageNet ResNet-10 / 18 / 34 / 50 / 101 / 152 and VGG-11 (torchvision layout).

Model names (``models.get_model``): ``resnet{10,18,34,50,101,152}_imagenet``, ``vgg11``, ``vgg11_bn``
(plain ``resnet18`` / ``resnet50`` are the CIFAR networks of ``resnet_cifar``).

ResNet (He et al. 2016, torchvision ``resnet*``, "v1.5": the stride sits in the 3x3 conv of a
bottleneck): stem conv7x7(3 -> 64, stride 2, pad 3)-BN-ReLU, max-pool 3x3 stride 2 pad 1, four
stages of widths (w, 2w, 4w, 8w) with strides (1, 2, 2, 2), global average pooling, classifier.
BasicBlocks (``resnet_cifar.BasicBlock``, projection shortcuts) for ResNet-10 [1, 1, 1, 1] (the
from-scratch ImageNet-LT network of OLTR and FSA), 18 and 34; ``Bottleneck`` blocks (1x1 -> 3x3 ->
1x1 with 4x expansion) for 50 [3, 4, 6, 3], 101 [3, 4, 23, 3] and 152 [3, 8, 36, 3]. ResNet-50
has 25,557,032 parameters at 1000 classes, as torchvision's.

VGG-11 (configuration A, Simonyan & Zisserman 2015; torchvision ``vgg11`` / ``vgg11_bn``): eight
3x3 convs (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; M = max-pool 2x2), adaptive
average pooling to 7x7, then ``fc6`` (25088 -> 4096)-ReLU-dropout, ``fc7`` (4096 -> 4096)-ReLU-
dropout and the ``classifier`` (4096 -> C). Its classifier therefore reads fc7, not the pooled
feature map: ``return_features`` still returns the map before pooling.

Interface as ``resnet_cifar``: ``__call__(x, train, modulation=None, return_features=False)``,
``modulation_points()``, head ``Classifier`` named ``classifier``, optional compute ``dtype``
(parameters stay float32). Names match ``convert_torchvision``'s mapping from torchvision's
state_dict keys. Convs use kaiming-normal fan_in weights (torchvision uses fan_out; equal for the
3x3 convs that keep the width); BN gamma = 1, beta = 0, PyTorch momentum and epsilon.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lt_jax.models.resnet_cifar import (BasicBlock, Classifier, Modulation, batch_norm,
                                        check_modulation, check_stage_range, conv3x3,
                                        pooled_logits, stage_modulation_points,
                                        kaiming_normal, modulate, output_dtype)

Dtype = Any

# depth -> (block, stage sizes)
RESNET_DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG_POOLED_SIZE = 7
VGG_HIDDEN = 4096


def conv1x1(features: int, stride: int, dtype, name: str) -> nn.Conv:
  """1x1 conv, no bias."""
  return nn.Conv(features, (1, 1), strides=(stride, stride), padding="VALID", use_bias=False,
                 kernel_init=kaiming_normal, dtype=dtype, name=name)


class Bottleneck(nn.Module):
  """relu(BN(conv1x1(relu(BN(conv3x3_s(relu(BN(conv1x1(x))))))) * gamma + beta + shortcut(x)).

  Width ``planes`` inside, 4 ``planes`` out; the stride is in the 3x3 conv (torchvision v1.5);
  a 1x1 conv + BN projection shortcut when the shape changes. (gamma, beta) =
  ``conv_modulation`` on the last BN output, before the residual add.
  """
  planes: int
  stride: int = 1
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x, train: bool, conv_modulation=None):
    out_planes = self.planes * EXPANSION["bottleneck"]
    y = conv1x1(self.planes, 1, self.dtype, "conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = conv3x3(self.planes, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(batch_norm(train, self.dtype, "bn2")(y))
    y = conv1x1(out_planes, 1, self.dtype, "conv3")(y)
    y = batch_norm(train, self.dtype, "bn3")(y)
    if conv_modulation is not None:
      y = modulate(y, {"conv": conv_modulation}, "conv")
    residual = x
    if self.stride != 1 or x.shape[-1] != out_planes:
      residual = conv1x1(out_planes, self.stride, self.dtype, "shortcut_conv")(x)
      residual = batch_norm(train, self.dtype, "shortcut_bn")(residual)
    return nn.relu(y + residual)


class ImageNetResNet(nn.Module):
  """Stem conv7x7/2-BN-ReLU-maxpool/2, four stages, GAP, classifier (see the module docstring).

  Attributes:
    num_classes: C.
    stage_sizes: blocks per stage.
    block: ``basic`` or ``bottleneck``.
    width: w, the stem's and stage 1's inner width (64).
    classifier: ``linear`` or ``cosine``.
    dtype: compute dtype (None: that of the inputs; parameters stay float32).
  """
  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  classifier: str = "linear"
  dtype: Optional[Dtype] = None

  def stage_widths(self) -> tuple[int, ...]:
    """Output channels of each stage."""
    return tuple(self.width * 2**k * EXPANSION[self.block] for k in range(len(self.stage_sizes)))

  def modulation_points(self) -> dict[str, int]:
    """{point: channels}: ``blockK_conv`` and ``blockK`` for K = 1..4, in forward order."""
    return stage_modulation_points(self.stage_widths())

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: Modulation = None,
               return_features: bool = False, from_stage: Optional[int] = None,
               to_stage: Optional[int] = None):
    """Logits (N, C), or (logits, features) with features the (N, h, w, 8w * expansion) map.

    ``from_stage`` / ``to_stage`` as ``resnet_cifar.ResNet`` (stage 0 = the stem with its
    max-pool): ``to_stage=k`` returns the map after stage k; ``from_stage=k`` takes that map as x.
    """
    check_modulation(modulation, self.modulation_points())
    if self.block not in EXPANSION:
      raise ValueError(f"block={self.block!r} is unknown; expected one of {list(EXPANSION)}")
    check_stage_range(from_stage, to_stage, len(self.stage_sizes))
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    if from_stage is None:
      x = nn.Conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                  kernel_init=kaiming_normal, dtype=self.dtype, name="stem_conv")(x)
      x = nn.relu(batch_norm(train, self.dtype, "stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for k, blocks in enumerate(self.stage_sizes, start=1):
      if to_stage is not None and k > to_stage:
        break
      if from_stage is not None and k <= from_stage:  # stages before from_stage already ran
        continue
      planes = self.width * 2**(k - 1)
      for i in range(blocks):
        conv_modulation = (modulation or {}).get(f"block{k}_conv") if i == blocks - 1 else None
        stride = 2 if (k > 1 and i == 0) else 1
        name = f"stage{k}_block{i}"
        if self.block == "basic":
          x = BasicBlock(planes, stride=stride, shortcut="projection", dtype=self.dtype,
                         name=name)(x, train, conv_modulation)
        else:
          x = Bottleneck(planes, stride=stride, dtype=self.dtype, name=name)(x, train,
                                                                             conv_modulation)
      x = modulate(x, modulation, f"block{k}")
    if to_stage is not None:
      return x
    logits = pooled_logits(x, self.num_classes, self.classifier, self.dtype)
    return (logits, x) if return_features else logits


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
    layers: channels per conv at width 64, ``"M"`` for a 2x2 max-pool (``VGG11_LAYERS``).
    width: base width w; every conv and the fc6 / fc7 widths scale by w / 64 (64 = torchvision).
    batch_norm: BN after every conv (torchvision ``vgg11_bn``).
    dropout: dropout rate after fc6 and fc7 in training (torchvision: 0.5). The shared training
      loop passes no ``dropout`` rng, so it needs 0; > 0 needs ``rngs={'dropout': key}``.
    classifier: ``linear`` or ``cosine``.
    dtype: compute dtype.
  """
  num_classes: int
  layers: Sequence[Any] = VGG11_LAYERS
  width: int = 64
  batch_norm: bool = False
  dropout: float = 0.0
  classifier: str = "linear"
  dtype: Optional[Dtype] = None

  def scaled(self, channels: int) -> int:
    """``channels`` at width 64 scaled to this model's width."""
    return max(1, channels * self.width // 64)

  def modulation_points(self) -> dict[str, int]:
    """{point: channels}: ``convK`` (after conv K's ReLU) for every conv, then ``fc6``, ``fc7``."""
    convs = [self.scaled(c) for c in self.layers if c != "M"]
    points = {f"conv{k}": c for k, c in enumerate(convs, start=1)}
    points.update(fc6=self.scaled(VGG_HIDDEN), fc7=self.scaled(VGG_HIDDEN))
    return points

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: Modulation = None,
               return_features: bool = False):
    """Logits (N, C), or (logits, features) with features the last conv block's map before pooling."""
    check_modulation(modulation, self.modulation_points())
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    k = 0
    for channels in self.layers:
      if channels == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      k += 1
      x = nn.Conv(self.scaled(channels), (3, 3), padding=((1, 1), (1, 1)), kernel_init=kaiming_normal,
                  bias_init=nn.initializers.zeros, dtype=self.dtype, name=f"conv{k}")(x)
      if self.batch_norm:
        x = batch_norm(train, self.dtype, f"bn{k}")(x)
      x = modulate(nn.relu(x), modulation, f"conv{k}")
    features = x
    x = adaptive_avg_pool(x, VGG_POOLED_SIZE).reshape(x.shape[0], -1)  # (h, w, c) order
    for name in ("fc6", "fc7"):
      x = nn.Dense(self.scaled(VGG_HIDDEN), kernel_init=nn.initializers.normal(0.01),
                   bias_init=nn.initializers.zeros, dtype=self.dtype, name=name)(x)
      x = modulate(nn.relu(x), modulation, name)
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = Classifier(self.num_classes, self.classifier, kernel_init=nn.initializers.normal(0.01),
                        dtype=self.dtype, name="classifier")(x)
    logits = logits.astype(output_dtype(logits))
    return (logits, features) if return_features else logits


def imagenet_resnet(depth: int, num_classes: int, width: int = 64, classifier: str = "linear",
                    dtype: Optional[Dtype] = None) -> ImageNetResNet:
  """ImageNet ResNet-{depth}, depth in 10, 18, 34, 50, 101, 152."""
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"an ImageNet ResNet needs depth in {sorted(RESNET_DEPTHS)}, got {depth}")
  block, stage_sizes = RESNET_DEPTHS[depth]
  return ImageNetResNet(num_classes, stage_sizes=stage_sizes, block=block, width=width,
                        classifier=classifier, dtype=dtype)


def vgg11(num_classes: int, width: int = 64, batch_norm: bool = False, dropout: float = 0.0,
          classifier: str = "linear", dtype: Optional[Dtype] = None) -> VGG:
  """VGG-11 (configuration A), optionally with BatchNorm (torchvision ``vgg11_bn``)."""
  return VGG(num_classes, layers=VGG11_LAYERS, width=width, batch_norm=batch_norm,
             dropout=dropout, classifier=classifier, dtype=dtype)


__all__ = ["Bottleneck", "ImageNetResNet", "VGG", "imagenet_resnet", "vgg11", "adaptive_avg_pool",
           "RESNET_DEPTHS"]
