"""ImageNet ResNet-10 / 18 / 34 / 50 / 101 / 152 for 224-pixel images (torchvision layout).

Model names (``models.get_model``): ``resnet{10,18,34,50,101,152}_imagenet`` (plain ``resnet18`` /
``resnet50`` are the CIFAR networks of ``resnet_cifar``; VGG-11 is in ``vgg``).

ResNet (He et al. 2016, torchvision ``resnet*``, "v1.5": the stride sits in the 3x3 conv of a
bottleneck): stem conv7x7(3 -> 64, stride 2, pad 3)-BN-ReLU, max-pool 3x3 stride 2 pad 1, four
stages of widths (w, 2w, 4w, 8w) with strides (1, 2, 2, 2), global average pooling, classifier.
BasicBlocks (``layers.BasicBlock``, projection shortcuts) for ResNet-10 [1, 1, 1, 1] (the
from-scratch ImageNet-LT network of OLTR and FSA), 18 and 34; ``Bottleneck`` blocks (1x1 -> 3x3 ->
1x1 with 4x expansion) for 50 [3, 4, 6, 3], 101 [3, 4, 23, 3] and 152 [3, 8, 36, 3]. ResNet-50
has 25,557,032 parameters at 1000 classes, as torchvision's.

Interface as ``resnet_cifar.ResNet``: ``__call__(x, train, modulation=None, return_features=False)``,
``modulation_points()``, head ``Classifier`` named ``classifier``, optional compute ``dtype``
(parameters stay float32). Names match ``convert_torchvision``'s mapping from torchvision's
state_dict keys. Convs use kaiming-normal fan_in weights (torchvision uses fan_out; equal for the
3x3 convs that keep the width); BN gamma = 1, beta = 0, PyTorch momentum and epsilon.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lt_jax.models import layers

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


class Bottleneck(nn.Module):
  """relu(BN(conv1x1(relu(BN(conv3x3_s(relu(BN(conv1x1(x))))))) * gamma + beta + shortcut(x)).

  Width ``planes`` inside, 4 ``planes`` out; the stride is in the 3x3 conv (torchvision v1.5);
  a 1x1 conv + BN projection shortcut when the shape changes. (gamma, beta) =
  ``conv_modulation`` on the last BN output, before the residual add.
  """
  planes: int
  stride: int = 1
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  @nn.compact
  def __call__(self, x, train: bool, conv_modulation=None):
    out_planes = self.planes * EXPANSION["bottleneck"]
    y = layers.conv1x1(self.planes, 1, self.dtype, "conv1")(x)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn1", self.bn_axis)(y))
    y = layers.conv3x3(self.planes, self.stride, self.dtype, "conv2")(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, "bn2", self.bn_axis)(y))
    y = layers.conv1x1(out_planes, 1, self.dtype, "conv3")(y)
    y = layers.batch_norm(train, self.dtype, "bn3", self.bn_axis)(y)
    if conv_modulation is not None:
      y = layers.modulate(y, {"conv": conv_modulation}, "conv")
    residual = x
    if self.stride != 1 or x.shape[-1] != out_planes:
      residual = layers.conv1x1(out_planes, self.stride, self.dtype, "shortcut_conv")(x)
      residual = layers.batch_norm(train, self.dtype, "shortcut_bn", self.bn_axis)(residual)
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
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  def stage_widths(self) -> tuple[int, ...]:
    """Output channels of each stage."""
    return tuple(self.width * 2**k * EXPANSION[self.block] for k in range(len(self.stage_sizes)))

  def modulation_points(self) -> dict[str, int]:
    """{point: channels}: ``blockK_conv`` and ``blockK`` for K = 1..4, in forward order."""
    return layers.stage_modulation_points(self.stage_widths())

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: layers.Modulation = None,
               return_features: bool = False, from_stage: Optional[int] = None,
               to_stage: Optional[int] = None):
    """Logits (N, C), or (logits, features) with features the (N, h, w, 8w * expansion) map.

    ``from_stage`` / ``to_stage`` as ``resnet_cifar.ResNet`` (stage 0 = the stem with its
    max-pool): ``to_stage=k`` returns the map after stage k; ``from_stage=k`` takes that map as x.
    """
    layers.check_modulation(modulation, self.modulation_points())
    if self.block not in EXPANSION:
      raise ValueError(f"block={self.block!r} is unknown; expected one of {list(EXPANSION)}")
    layers.check_stage_range(from_stage, to_stage, len(self.stage_sizes))
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    if from_stage is None:
      x = nn.Conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                  kernel_init=layers.kaiming_normal, dtype=self.dtype, name="stem_conv")(x)
      x = nn.relu(layers.batch_norm(train, self.dtype, "stem_bn", self.bn_axis)(x))
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
          x = layers.BasicBlock(planes, stride=stride, shortcut="projection", dtype=self.dtype,
                                bn_axis=self.bn_axis, name=name)(x, train, conv_modulation)
        else:
          x = Bottleneck(planes, stride=stride, dtype=self.dtype, bn_axis=self.bn_axis, name=name)(x, train,
                                                                             conv_modulation)
      x = layers.modulate(x, modulation, f"block{k}")
    if to_stage is not None:
      return x
    logits = layers.pooled_logits(x, self.num_classes, self.classifier, self.dtype)
    return (logits, x) if return_features else logits


def imagenet_resnet(depth: int, num_classes: int, width: int = 64, classifier: str = "linear",
                    dtype: Optional[layers.Dtype] = None,
                    bn_axis: Optional[str] = None) -> ImageNetResNet:
  """ImageNet ResNet-{depth}, depth in 10, 18, 34, 50, 101, 152."""
  if depth not in RESNET_DEPTHS:
    raise ValueError(f"an ImageNet ResNet needs depth in {sorted(RESNET_DEPTHS)}, got {depth}")
  block, stage_sizes = RESNET_DEPTHS[depth]
  return ImageNetResNet(num_classes, stage_sizes=stage_sizes, block=block, width=width,
                        classifier=classifier, dtype=dtype, bn_axis=bn_axis)


__all__ = ["Bottleneck", "ImageNetResNet", "imagenet_resnet", "RESNET_DEPTHS"]
