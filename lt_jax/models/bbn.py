"""BBN's bilateral-branch network (Zhou et al., CVPR 2020) on a CIFAR ResNet-{6n+2}.

A conventional branch (fed by the uniform sampler) and a re-balancing branch (fed by the reversed
sampler) share the stem and every residual block but the last ``branch_blocks`` ones; each branch
has its own copy of those (``branch_blocks = 1``: the last residual block, as the paper and the
official code's ``cb_block`` / ``rb_block``; ``branch_blocks = n``: each branch its own stage 3).
With the pooled features f_c, f_r (N, 4w) of the branches, the logits are

  z = W^T (s [alpha f_c, (1 - alpha) f_r]) + b = s (alpha W_c^T f_c + (1 - alpha) W_r^T f_r) + b,

one classifier W (8w, C) = [W_c; W_r] on the concatenation. ``mix_scale`` s is 2 in the official
code (``2 * torch.cat((l * feature_a, (1 - l) * feature_b))``), so inference at alpha = 0.5 is the
classifier on [f_c, f_r]; s = 1 is the paper's Eq. (1). Training passes the two samplers' images
(``rebalanced_images``) and the cumulative-learning alpha (``lt_jax.methods.bbn``); evaluation is
the plain call ``model.apply(v, x, train=False)``: both branches on x at alpha = 0.5.

Parameters: ``trunk`` (stem_conv, stem_bn, stage{k}_block{i} of the shared blocks, named as in
``resnet_cifar.ResNet``), ``conventional`` and ``rebalancing`` (the branch blocks), ``classifier``.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lt_jax.models import layers


def stages(x: jax.Array, train: bool, part: nn.Module, block_ids: dict[int, range]) -> jax.Array:
  """Blocks ``block_ids[k]`` of each stage k (1-indexed, in order) of ``part``'s ResNet, on x."""
  for k, ids in block_ids.items():
    x = layers.residual_stage(x, train, stage=k, planes=part.width * 2**(k - 1), block_ids=ids,
                              shortcut=part.shortcut, dtype=part.dtype, bn_axis=part.bn_axis)
  return x


class Trunk(nn.Module):
  """The shared part: stem, then every block but the last ``branch_blocks`` of the last stage."""
  stage_sizes: Sequence[int]
  width: int
  branch_blocks: int
  shortcut: str = "option_a"
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.stem(x, self.width, train, self.dtype, self.bn_axis)
    *first, last = self.stage_sizes
    shared = [*first, last - self.branch_blocks]  # blocks per stage in the trunk
    return stages(x, train, self, {k: range(n) for k, n in enumerate(shared, start=1)})


class Branch(nn.Module):
  """One branch: the last ``branch_blocks`` blocks of the last stage; returns its feature map."""
  stage_sizes: Sequence[int]
  width: int
  branch_blocks: int
  shortcut: str = "option_a"
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  @nn.compact
  def __call__(self, x, train: bool):
    blocks = self.stage_sizes[-1]
    return stages(x, train, self, {len(self.stage_sizes): range(blocks - self.branch_blocks, blocks)})


class BBNResNet(nn.Module):
  """Bilateral-branch ResNet: logits z = W^T (s [alpha f_c, (1 - alpha) f_r]) + b.

  Attributes:
    num_classes: C.
    stage_sizes: blocks per stage, (n, n, n) for ResNet-{6n+2}.
    width: base width w (the branch features have 4w channels each, the classifier 8w inputs).
    branch_blocks: trailing blocks of the last stage each branch has its own copy of (1..n).
    mix_scale: s (2 = the official code, 1 = the paper's Eq. (1)).
    classifier: ``linear`` or ``cosine``.
    dtype: compute dtype (None: that of the inputs and parameters).
  """
  num_classes: int
  stage_sizes: Sequence[int] = (5, 5, 5)
  width: int = 16
  branch_blocks: int = 1
  mix_scale: float = 2.0
  classifier: str = "linear"
  shortcut: str = "option_a"
  dtype: Optional[layers.Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  def modulation_points(self) -> dict[str, int]:
    """None: BBN takes no feature modulation."""
    return {}

  @nn.compact
  def __call__(self, x, train: bool = True, modulation: layers.Modulation = None,
               return_features: bool = False, alpha=0.5, rebalanced_images: Optional[jax.Array] = None):
    """Logits (N, C) of the mix at ``alpha``, or (logits, features) with ``return_features``.

    x feeds the conventional branch and ``rebalanced_images`` (None: x, with one trunk pass) the
    re-balancing one; sample i of the two is mixed into logit row i. ``features`` is the map
    s [alpha F_c, (1 - alpha) F_r] (N, h, w, 8w) before pooling: the classifier on its global
    average is the logits. ``alpha`` may be a traced scalar.
    """
    layers.check_modulation(modulation, self.modulation_points())
    if not 1 <= self.branch_blocks <= self.stage_sizes[-1]:
      raise ValueError(f"model.bbn_branch_blocks={self.branch_blocks} must be in [1, "
                       f"{self.stage_sizes[-1]}] (the blocks of the last stage)")
    if self.dtype is not None:
      x = jnp.asarray(x, self.dtype)
      rebalanced_images = None if rebalanced_images is None else jnp.asarray(rebalanced_images, self.dtype)
    parts = dict(stage_sizes=tuple(self.stage_sizes), width=self.width, branch_blocks=self.branch_blocks,
                 shortcut=self.shortcut, dtype=self.dtype, bn_axis=self.bn_axis)
    trunk = Trunk(**parts, name="trunk")
    shared = trunk(x, train)
    shared_r = shared if rebalanced_images is None else trunk(rebalanced_images, train)
    maps_c = Branch(**parts, name="conventional")(shared, train)
    maps_r = Branch(**parts, name="rebalancing")(shared_r, train)
    alpha = jnp.asarray(alpha, maps_c.dtype)
    features = self.mix_scale * jnp.concatenate([alpha * maps_c, (1.0 - alpha) * maps_r], axis=-1)
    logits = layers.pooled_logits(features, self.num_classes, self.classifier, self.dtype)
    return (logits, features) if return_features else logits


def bbn_resnet(depth: int, num_classes: int, width: int = 16, classifier: str = "linear",
               dtype: Optional[layers.Dtype] = None, branch_blocks: int = 1,
               mix_scale: float = 2.0, bn_axis: Optional[str] = None) -> BBNResNet:
  """BBN on ResNet-{depth} (depth = 6n + 2, option-A shortcuts), e.g. ``bbn_resnet32``."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"model.name='bbn_resnet{depth}': BBN's CIFAR ResNet needs depth 6n + 2 with n >= 1 "
                     "(bbn_resnet8, bbn_resnet20, bbn_resnet32, ...)")
  n = (depth - 2) // 6
  if not isinstance(branch_blocks, int) or not 1 <= branch_blocks <= n:
    raise ValueError(f"model.bbn_branch_blocks={branch_blocks!r} must be an integer in [1, {n}] for "
                     f"bbn_resnet{depth} (1 = the last residual block, {n} = the whole last stage)")
  if not mix_scale > 0:
    raise ValueError(f"model.bbn_mix_scale={mix_scale!r} must be > 0")
  return BBNResNet(num_classes, stage_sizes=(n, n, n), width=width, branch_blocks=branch_blocks,
                   mix_scale=float(mix_scale), classifier=classifier, dtype=dtype,
                   bn_axis=bn_axis)
