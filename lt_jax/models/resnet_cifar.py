"""CIFAR ResNets: ResNet-{6n+2} with option-A shortcuts, and the CIFAR ResNet-18 / ResNet-34.

ResNet-{6n+2} (He et al. 2016, sec. 4.2; the network of LDAM, MW-Net, Jamal et al. and FSA):
stem conv3x3(3 -> w)-BN-ReLU, three stages of n BasicBlocks of widths (w, 2w, 4w) (the first
block of stages 2 and 3 has stride 2), global average pooling, classifier. Shortcuts are option A:
x[:, ::2, ::2, :] with the channels zero-padded, no parameters. ResNet-32 (n = 5, w = 16) has
464,154 parameters for 10 classes.

ResNet-18 / ResNet-34 (the common CIFAR variant): the same 3x3 stem with w = 64 channels and no
max-pool, stages of [2, 2, 2, 2] / [3, 4, 6, 3] BasicBlocks of widths (w, 2w, 4w, 8w), strides
(1, 2, 2, 2), and a 1x1 conv + BN projection shortcut where the shape changes.

Layers, PyTorch-parity initialisation and the modulation points (``blockK``, ``blockK_conv``) are
those of ``layers``.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from lt_jax.models import layers

SHORTCUTS = ("option_a", "projection")


class ResNet(nn.Module):
  """Stem conv3x3-BN-ReLU, stages of BasicBlocks of widths w 2^k (stride 2 from stage 2), GAP, classifier.

  Attributes:
    num_classes: C, the classifier's outputs.
    stage_sizes: blocks per stage, e.g. (5, 5, 5) for ResNet-32, (2, 2, 2, 2) for ResNet-18.
    width: base width w (channels of the stem and of stage 1).
    shortcut: ``option_a`` (parameter-free) or ``projection`` (1x1 conv + BN).
    classifier: ``linear`` or ``cosine``.
    dtype: compute dtype (None: that of the inputs and parameters; parameters stay float32).
  """
  num_classes: int
  stage_sizes: Sequence[int] = (5, 5, 5)
  width: int = 16
  shortcut: str = "option_a"
  classifier: str = "linear"
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  def stage_widths(self) -> tuple[int, ...]:
    return tuple(self.width * 2**k for k in range(len(self.stage_sizes)))

  def modulation_points(self) -> dict[str, int]:
    return layers.stage_modulation_points(self.stage_widths())

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: layers.Modulation = None,
               return_features: bool = False, from_stage: Optional[int] = None,
               to_stage: Optional[int] = None):
    """Logits (N, C), or (logits, features) with features the (N, h, w, 4w or 8w) map before GAP.

    ``from_stage`` / ``to_stage`` run part of the network (FSA augments after a stage, Chu et al.
    Fig. 9): with ``to_stage=k`` the output is the map after stage k (k = 0: the stem) instead of
    logits; with ``from_stage=k`` the input ``x`` is such a map and stages k+1, ... run on it
    (None: ``x`` is an image).
    ``model.apply(v, model.apply(v, x, to_stage=k), from_stage=k)`` equals ``model.apply(v, x)``.
    """
    layers.check_modulation(modulation, self.modulation_points())
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f"shortcut={self.shortcut!r} is unknown; expected one of {list(SHORTCUTS)}")
    layers.check_stage_range(from_stage, to_stage, len(self.stage_sizes))
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
    if from_stage is None:
      x = layers.stem(x, self.width, train, self.dtype, self.bn_axis)
    for k, (blocks, planes) in enumerate(zip(self.stage_sizes, self.stage_widths()), start=1):
      if to_stage is not None and k > to_stage:
        break
      if from_stage is not None and k <= from_stage:  # stages before from_stage already ran
        continue
      x = layers.residual_stage(x, train, stage=k, planes=planes, block_ids=range(blocks),
                                shortcut=self.shortcut, dtype=self.dtype, bn_axis=self.bn_axis,
                                conv_modulation=(modulation or {}).get(f"block{k}_conv"))
      x = layers.modulate(x, modulation, f"block{k}")
    if to_stage is not None:
      return x
    logits = layers.pooled_logits(x, self.num_classes, self.classifier, self.dtype)
    return (logits, x) if return_features else logits


def cifar_resnet(depth: int, num_classes: int, width: int = 16, classifier: str = "linear",
                 dtype: Optional[layers.Dtype] = None, bn_axis: Optional[str] = None) -> ResNet:
  """ResNet-{depth} with depth = 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), option-A shortcuts."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"model.name='resnet{depth}': a CIFAR ResNet needs depth 6n + 2 with n >= 1 "
                     "(resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110, ...)")
  n = (depth - 2) // 6
  return ResNet(num_classes, stage_sizes=(n, n, n), width=width, shortcut="option_a",
                classifier=classifier, dtype=dtype, bn_axis=bn_axis)


def resnet18(num_classes: int, width: int = 64, classifier: str = "linear",
             dtype: Optional[layers.Dtype] = None, bn_axis: Optional[str] = None) -> ResNet:
  """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2], widths (w, 2w, 4w, 8w), projection shortcuts."""
  return ResNet(num_classes, stage_sizes=(2, 2, 2, 2), width=width, shortcut="projection",
                classifier=classifier, dtype=dtype, bn_axis=bn_axis)


def resnet34(num_classes: int, width: int = 64, classifier: str = "linear",
             dtype: Optional[layers.Dtype] = None, bn_axis: Optional[str] = None) -> ResNet:
  """CIFAR ResNet-34: BasicBlocks [3, 4, 6, 3], widths (w, 2w, 4w, 8w), projection shortcuts."""
  return ResNet(num_classes, stage_sizes=(3, 4, 6, 3), width=width, shortcut="projection",
                classifier=classifier, dtype=dtype, bn_axis=bn_axis)
