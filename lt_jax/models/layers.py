"""Layers shared by every network: classifier head, feature modulation, PyTorch-style inits, blocks.

PyTorch parity (protocols.md B.2): kaiming normal fan_in, untruncated (std sqrt(2 / fan_in)), on
every conv and linear weight; linear bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); no conv biases; BN
gamma = 1, beta = 0, momentum 0.9 (PyTorch's 0.1), epsilon 1e-5; 3x3 convs pad ((1, 1), (1, 1))
explicitly, since 'SAME' pads (0, 1) at stride 2 on even sizes. Flax keeps the biased running
variance where PyTorch keeps the unbiased one (negligible). Networks that keep PyTorch's defaults
(LeNet, MW-Net's V_Theta) use ``torch_default_kernel_init`` and ``torch_uniform_init``.

Modulation (MFM): at a point, f -> gamma * f + beta with gamma, beta of shape (N, C), channel-wise
on (N, h, w, C) maps (gamma[:, None, None, :]) and neuron-wise on (N, C) activations. ResNets have
the points ``blockK`` (output of stage K) and ``blockK_conv`` (stage K's last conv + BN, before the
residual add).

Functions that build submodules (``conv3x3``, ``stem``, ``residual_stage``, ...) are called inside
a compact method: the submodules, and their parameter names, are the caller's.
"""

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
from flax.linen import dtypes
import jax
import jax.numpy as jnp

Dtype = Any
Modulation = Optional[Mapping[str, tuple[jax.Array, jax.Array]]]

BN_MOMENTUM = 0.9  # running = 0.9 running + 0.1 batch, i.e. PyTorch's momentum=0.1
BN_EPSILON = 1e-5
CLASSIFIERS = ("linear", "cosine")
COSINE_EPS = 1e-12  # torch.nn.functional.normalize: v / max(|v|, eps)

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# PyTorch's default conv / linear weight init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_uniform_init(fan_in: int) -> Callable:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default bias init (and nn.Linear's weight bound)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def unit_columns_init(key, shape, dtype=jnp.float32):
  """U(-1, 1), then every column W[:, j] scaled to unit L2 norm (LDAM's NormedLinear renorm)."""
  w = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  return w / jnp.linalg.norm(w, axis=0, keepdims=True)


def output_dtype(x: jax.Array) -> jnp.dtype:
  """At least float32: half-precision logits are upcast, float64 (gradient checks) is kept."""
  return jnp.promote_types(x.dtype, jnp.float32)


# --- Modulation ------------------------------------------------------------------------------------

def check_modulation(modulation: Modulation, points: Mapping[str, int]) -> None:
  """Raises ValueError for a point the model does not have or (gamma, beta) of the wrong width."""
  if modulation is None:
    return
  unknown = sorted(set(modulation) - set(points))
  if unknown:
    raise ValueError(f"modulation names points {unknown} that this model does not have; expected "
                     f"a subset of {list(points)}")
  for name, (gamma, beta) in modulation.items():
    if gamma.shape[-1] != points[name] or beta.shape[-1] != points[name]:
      raise ValueError(f"modulation[{name!r}] needs gamma and beta of shape (N, {points[name]}); got "
                       f"{gamma.shape} and {beta.shape}")


def pooled_logits(features: jax.Array, num_classes: int, classifier: str, dtype) -> jax.Array:
  """The ``classifier`` submodule on the global average pool of the pre-pooling map (N, h, w, D)."""
  logits = Classifier(num_classes, classifier, dtype=dtype, name="classifier")(
      jnp.mean(features, axis=(1, 2)))
  return logits.astype(output_dtype(logits))


def stage_modulation_points(stage_widths) -> dict[str, int]:
  """{point: channels}: ``blockK_conv`` and ``blockK`` for every stage K, in forward order."""
  points = {}
  for k, channels in enumerate(stage_widths, start=1):
    points[f"block{k}_conv"] = channels
    points[f"block{k}"] = channels
  return points


def check_stage_range(from_stage: Optional[int], to_stage: Optional[int], num_stages: int) -> None:
  """0 <= from_stage <= to_stage <= num_stages (None: from the image / to the logits), or ValueError."""
  first = -1 if from_stage is None else from_stage  # -1: start from the image
  if (from_stage is not None and not 0 <= from_stage <= num_stages) or (
      to_stage is not None and not max(first, 0) <= to_stage <= num_stages):
    raise ValueError(f"from_stage={from_stage}, to_stage={to_stage}: need 0 <= from_stage <= to_stage "
                     f"<= {num_stages} (the stages of this model; 0 = the stem)")


def modulate(f: jax.Array, modulation: Modulation, name: str) -> jax.Array:
  """f * gamma + beta at point ``name``: channel-wise on (N, h, w, C) maps, neuron-wise on (N, C).

  The identity when ``modulation`` is None or does not name the point.
  """
  if modulation is None or name not in modulation:
    return f
  gamma, beta = modulation[name]
  if f.ndim == 4:
    gamma, beta = gamma[:, None, None, :], beta[:, None, None, :]
  return f * gamma + beta


# --- Layers ----------------------------------------------------------------------------------------

class Classifier(nn.Module):
  """Logits z from pooled features x (N, D); parameters ``kernel`` W (D, C) and, if linear, ``bias``.

  ``linear``: z = x W + b. ``cosine`` (LDAM's NormedLinear): z = (x / |x|) (W / |W|_columns), no
  bias, W initialised U(-1, 1) with unit columns. Usable on its own: ``Classifier(...).apply(
  {'params': params['classifier']}, features.mean(axis=(1, 2)))`` equals the model's logits.
  """
  num_classes: int
  kind: str = "linear"
  kernel_init: Callable = kaiming_normal
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    if self.kind == "linear":
      kernel = self.param("kernel", self.kernel_init, (fan_in, self.num_classes), jnp.float32)
      bias = self.param("bias", torch_uniform_init(fan_in), (self.num_classes,), jnp.float32)
      x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      return x @ kernel + bias
    if self.kind == "cosine":
      kernel = self.param("kernel", unit_columns_init, (fan_in, self.num_classes), jnp.float32)
      x, kernel = dtypes.promote_dtype(x, kernel, dtype=self.dtype)
      x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), COSINE_EPS)
      kernel = kernel / jnp.maximum(jnp.linalg.norm(kernel, axis=0, keepdims=True), COSINE_EPS)
      return x @ kernel
    raise ValueError(f"model.classifier={self.kind!r} is unknown; expected one of {list(CLASSIFIERS)}")


def conv3x3(features: int, stride: int, dtype, name: str) -> nn.Conv:
  """3x3 conv, no bias, PyTorch padding 1 on every side (also at stride 2)."""
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=False,
                 kernel_init=kaiming_normal, dtype=dtype, name=name)


def conv1x1(features: int, stride: int, dtype, name: str) -> nn.Conv:
  """1x1 conv, no bias."""
  return nn.Conv(features, (1, 1), strides=(stride, stride), padding="VALID", use_bias=False,
                 kernel_init=kaiming_normal, dtype=dtype, name=name)


def batch_norm(train: bool, dtype, name: str, axis: Optional[str] = None) -> nn.BatchNorm:
  """BN with batch statistics in training, running averages otherwise (PyTorch momentum / eps).

  With ``axis`` (a mesh axis, ``model.sync_batch_norm``) the training statistics are the mean and
  variance over the whole global batch (``lax.pmean`` over the devices), not each device's share.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, axis_name=axis if train else None, name=name)


def option_a_shortcut(x: jax.Array, planes: int, stride: int = 2) -> jax.Array:
  """x[:, ::s, ::s, :] with the channels zero-padded to ``planes``, half on each side.

  For planes = 2 C_in this is the peers' planes // 4 zeros on each side; no parameters.
  """
  x = x[:, ::stride, ::stride, :]
  extra = planes - x.shape[-1]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class BasicBlock(nn.Module):
  """relu(BN(conv3x3(relu(BN(conv3x3(x))))) * gamma + beta + shortcut(x)).

  (gamma, beta) = ``conv_modulation`` (identity when None). The shortcut is the identity when the
  shape is kept, else option A (parameter-free) or a 1x1 conv + BN projection.
  """
  planes: int
  stride: int = 1
  shortcut: str = "option_a"
  dtype: Optional[Dtype] = None
  bn_axis: Optional[str] = None  # sync BatchNorm over this mesh axis (model.sync_batch_norm)

  @nn.compact
  def __call__(self, x, train: bool, conv_modulation=None):
    y = conv3x3(self.planes, self.stride, self.dtype, "conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1", self.bn_axis)(y))
    y = conv3x3(self.planes, 1, self.dtype, "conv2")(y)
    y = batch_norm(train, self.dtype, "bn2", self.bn_axis)(y)
    if conv_modulation is not None:
      y = modulate(y, {"conv": conv_modulation}, "conv")
    residual = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      if self.shortcut == "option_a":
        residual = option_a_shortcut(x, self.planes, self.stride)
      else:
        residual = conv1x1(self.planes, self.stride, self.dtype, "shortcut_conv")(x)
        residual = batch_norm(train, self.dtype, "shortcut_bn", self.bn_axis)(residual)
    return nn.relu(y + residual)


# --- Building blocks of networks -----------------------------------------------------------------

def stem(x: jax.Array, width: int, train: bool, dtype, bn_axis: Optional[str] = None) -> jax.Array:
  """relu(BN(conv3x3(x))) with ``width`` channels: submodules ``stem_conv``, ``stem_bn``."""
  x = conv3x3(width, 1, dtype, "stem_conv")(x)
  return nn.relu(batch_norm(train, dtype, "stem_bn", bn_axis)(x))


def residual_stage(x: jax.Array, train: bool, *, stage: int, planes: int, block_ids: Sequence[int],
                   shortcut: str, dtype, conv_modulation=None,
                   bn_axis: Optional[str] = None) -> jax.Array:
  """Blocks ``block_ids`` (in order) of stage ``stage`` (1-indexed): submodules ``stage{k}_block{i}``.

  Block 0 of stages k > 1 has stride 2. ``conv_modulation`` goes to the last of ``block_ids``
  (the stage's last block when ``block_ids`` is the whole stage).
  """
  block_ids = list(block_ids)
  for i in block_ids:
    modulation = conv_modulation if i == block_ids[-1] else None
    x = BasicBlock(planes, stride=2 if (stage > 1 and i == 0) else 1, shortcut=shortcut, dtype=dtype,
                   bn_axis=bn_axis, name=f"stage{stage}_block{i}")(x, train, modulation)
  return x
