"""Long-tailed losses: cross-entropy, focal, LDAM, logit adjustment, balanced softmax, class-balanced
weights, deferred re-weighting.

The definitions follow the LDAM-DRW code (protocols.md C). Losses are per-sample and pure jnp;
class weights w (C,) and their schedule are separate, so one training step serves every loss:

  per_sample_loss = make_base_loss(config.loss, counts)   # once per run
  w = class_weights_at(config.loss, counts, epoch)        # (C,); epoch may be traced (DRW in jit)
  values, sample_weights = per_sample_loss(logits, labels, w)
  loss = weighted_mean(values, sample_weights)            # sum_i s_i l_i / sum_i s_i

Why the base loss returns (values, sample_weights): the peers apply w in two different places.
CE and LDAM pass it as PyTorch's ``weight=``, whose 'mean' reduction is sum_i w_{y_i} l_i /
sum_i w_{y_i} (C.1), so there l_i is unweighted and s_i = w_{y_i}. Focal puts w inside the loss
(l_i = w_{y_i} CE_i before the modulating factor) and takes a plain batch mean (C.4), so s_i = 1.
Keeping that choice inside the loss means a step never branches on ``loss.name``, and a meta
method that weights samples itself gets the plain l_i (and s_i = 1) by passing w = 1.

Cui et al. (2019), whose class-balanced numbers the Jamal et al. slides quote, reduce differently:
their code divides sum_i w_{y_i} l_i by the batch size B (TF's weighted losses, and the sigmoid /
focal losses' "normalize by the total number of positive samples"). ``loss.cb_reduction='batch'``
gives that (l_i = w_{y_i} l_i, s_i = 1); 'weight_sum' (default) is the PyTorch / LDAM form above.
Their class-balanced focal loss is sigmoid-based: ``loss.name='sigmoid_focal'``.

Logits in half precision are upcast to float32; float64 stays float64 (gradient checks).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

LOSS_NAMES = ("ce", "focal", "ldam", "logit_adjust", "balanced_softmax", "sigmoid_focal")
REWEIGHTS = ("none", "cb")
CB_REDUCTIONS = ("weight_sum", "batch")  # sum_i w l_i / sum_i w (PyTorch, LDAM) | / B (Cui et al.)

PerSampleLoss = Callable[..., tuple[jax.Array, jax.Array]]


def _upcast(logits: jax.Array) -> jax.Array:
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _positive_counts(counts) -> np.ndarray:
  """Class counts n_j as float64, all > 0."""
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or not len(counts) or np.any(counts <= 0):
    raise ValueError(f"class counts must be a non-empty 1-D array of positive numbers; got {counts}")
  return counts


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """CE_i = -log softmax(z_i)[y_i], shape (N,), for integer labels y."""
  log_probs = jax.nn.log_softmax(_upcast(logits), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def weighted_mean(values: jax.Array, weights: jax.Array, axis_name: str | None = None) -> jax.Array:
  """sum_i w_i v_i / sum_i w_i (PyTorch weighted-CE 'mean'; a plain mean when w = 1).

  With ``axis_name`` (inside shard_map) the denominator is the device mean of the local sums, so
  the device mean of the result is the weighted mean over the global batch.
  """
  total = jnp.sum(weights)
  if axis_name:
    total = jax.lax.pmean(total, axis_name)
  return jnp.sum(weights * values) / total


def class_balanced_weights(counts, beta: float) -> np.ndarray:
  """w_y = (1 - beta) / (1 - beta^{n_y}), normalised so that sum_y w_y = C (float64, (C,)).

  Cui et al. 2019's effective number; beta = 0 gives w = 1 (LDAM's DRW before the switch).
  """
  if not 0.0 <= beta < 1.0:
    raise ValueError(f"loss.cb_beta={beta!r} must be in [0, 1)")
  counts = _positive_counts(counts)
  weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
  return weights / weights.sum() * len(counts)


def ldam_margins(counts, max_m: float) -> np.ndarray:
  """m_j = max_m (n_min / n_j)^(1/4) (float64, (C,)): the rarest class gets exactly max_m."""
  counts = _positive_counts(counts)
  return max_m * (counts.min() / counts) ** 0.25


def ldam_logits(logits: jax.Array, labels: jax.Array, margins, s: float) -> jax.Array:
  """s (z - m_y onehot(y)): the margin m_y is subtracted from the target logit only."""
  logits = _upcast(logits)
  margins = jnp.asarray(margins, logits.dtype)
  one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return s * (logits - margins[labels][:, None] * one_hot)


def focal_loss(logits: jax.Array, labels: jax.Array, gamma: float, class_weights=None) -> jax.Array:
  """Per-sample focal loss as in the LDAM code: l_i = w_{y_i} CE_i, p_i = exp(-l_i), (1 - p_i)^gamma l_i.

  Without class weights p_i is the model's probability of the true class (Lin et al. 2017, no
  alpha). With class weights p_i = exp(-w_{y_i} CE_i) is not that probability: we reproduce the
  peers (protocols.md C.4), not the paper's formula. The LDAM code reduces with a plain mean.
  """
  values = cross_entropy(logits, labels)
  if class_weights is not None:
    values = jnp.asarray(class_weights, values.dtype)[labels] * values
  if gamma == 0:
    return values
  return (1.0 - jnp.exp(-values)) ** gamma * values


def sigmoid_focal_loss(logits: jax.Array, labels: jax.Array, gamma: float) -> jax.Array:
  """Per-sample sigmoid focal loss of Cui et al. (2019): sum_j (1 - p_t,j)^gamma BCE(z_j, y_j).

  One-vs-all over the C classes, y_j = 1[j = y], p_j = sigmoid(z_j), p_t,j = p_j if y_j else
  1 - p_j, BCE = -log p_t,j. With s_j = 2 y_j - 1: -log p_t,j = softplus(-s_j z_j) and
  (1 - p_t,j)^gamma = exp(-gamma softplus(s_j z_j)) (Cui et al.'s exp(-gamma (y z + log(1 +
  e^{-z}))), without its cancellation); gamma = 0 is the sigmoid cross-entropy. Class weights
  multiply the result (``make_base_loss``); Cui et al. divide the batch's sum by B.
  """
  logits = _upcast(logits)
  signed = (2.0 * jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype) - 1.0) * logits
  bce = jax.nn.softplus(-signed)  # -log p_t
  if gamma == 0:
    return bce.sum(axis=-1)
  return (jnp.exp(-gamma * jax.nn.softplus(signed)) * bce).sum(axis=-1)


def log_prior(counts) -> np.ndarray:
  """log pi_j = log(n_j / sum_k n_k), the training class prior (float64, (C,))."""
  counts = _positive_counts(counts)
  return np.log(counts / counts.sum())


def logit_adjusted(logits: jax.Array, offsets) -> jax.Array:
  """z + delta: per-class offsets delta (C,) added to every row of the logits (N, C)."""
  logits = _upcast(logits)
  return logits + jnp.asarray(offsets, logits.dtype)


def logit_adjusted_loss_offsets(counts, tau: float) -> np.ndarray:
  """tau log pi: the logit-adjusted loss (Menon et al. 2021, Eq. 10) is CE on z + tau log pi."""
  return tau * log_prior(counts)


def balanced_softmax_offsets(counts) -> np.ndarray:
  """log n_j: balanced softmax (Ren et al. 2020) is CE on z + log n, i.e. softmax of n_j exp(z_j).

  The same as the logit-adjusted loss at tau = 1 (log pi and log n differ by a constant).
  """
  return np.log(_positive_counts(counts))


def posthoc_logit_adjustment(logits: jax.Array, counts, tau: float) -> jax.Array:
  """z - tau log pi: post-hoc logit adjustment (Menon et al. 2021, Eq. 8) of a trained model's
  logits; argmax_y (z_y - tau log pi_y) is the balanced-error prediction when softmax(z) fits
  the (long-tailed) training distribution and tau = 1."""
  return logit_adjusted(logits, -tau * log_prior(counts))


def make_base_loss(loss_config: ml_collections.ConfigDict, class_counts) -> PerSampleLoss:
  """``per_sample_loss(logits, labels, class_weights=None) -> (values (N,), sample_weights (N,))``.

  ``loss.name``: ``ce``; ``focal`` (gamma = ``loss.focal_gamma``, w inside the loss, s_i = 1);
  ``sigmoid_focal`` (Cui et al.'s, ``sigmoid_focal_loss``; gamma = ``loss.focal_gamma``; w
  multiplies l_i, s_i = 1, as their code); ``ldam`` (CE on s (z - m_y onehot(y)), margins from
  ``class_counts`` and ``loss.ldam_max_m``, s = ``loss.ldam_s``); ``logit_adjust`` (CE on z + tau log pi, pi the class prior of
  ``class_counts``, tau = ``loss.la_tau``); ``balanced_softmax`` (CE on z + log n). For all but
  focal s_i = w_{y_i}, or, with ``loss.cb_reduction='batch'`` (Cui et al.), l_i <- w_{y_i} l_i and
  s_i = 1, so the reduction divides by B. ``class_weights`` None means w = 1.
  Reduce with ``weighted_mean(values, sample_weights)``.
  """
  name = loss_config.name
  if name not in LOSS_NAMES:
    raise ValueError(f"loss.name={name!r} is unknown; expected one of {list(LOSS_NAMES)}")
  reduction = loss_config.get("cb_reduction", "weight_sum")
  if reduction not in CB_REDUCTIONS:
    raise ValueError(f"loss.cb_reduction={reduction!r} is unknown; expected one of "
                     f"{list(CB_REDUCTIONS)}")

  def weighted(values, labels, class_weights, reduction=reduction):
    """(l_i, s_i) with w_{y_i} as the sample weight, or inside l_i for the 'batch' reduction."""
    if class_weights is None:
      return values, jnp.ones_like(values)
    w = jnp.asarray(class_weights, values.dtype)[labels]
    if reduction == "batch":
      return w * values, jnp.ones_like(values)
    return values, w

  if name == "ce":
    def per_sample_loss(logits, labels, class_weights=None):
      return weighted(cross_entropy(logits, labels), labels, class_weights)

  elif name in ("focal", "sigmoid_focal"):
    gamma = loss_config.focal_gamma
    if not gamma >= 0:
      raise ValueError(f"loss.focal_gamma={gamma!r} must be >= 0")

    if name == "focal":
      def per_sample_loss(logits, labels, class_weights=None):
        values = focal_loss(logits, labels, gamma, class_weights)
        return values, jnp.ones_like(values)
    else:
      def per_sample_loss(logits, labels, class_weights=None):
        return weighted(sigmoid_focal_loss(logits, labels, gamma), labels, class_weights, "batch")

  elif name in ("logit_adjust", "balanced_softmax"):
    if name == "logit_adjust":
      tau = loss_config.la_tau
      if not tau >= 0:
        raise ValueError(f"loss.la_tau={tau!r} must be >= 0")
      offsets = logit_adjusted_loss_offsets(class_counts, tau)
    else:
      offsets = balanced_softmax_offsets(class_counts)

    def per_sample_loss(logits, labels, class_weights=None):
      return weighted(cross_entropy(logit_adjusted(logits, offsets), labels), labels, class_weights)

  else:
    if not loss_config.ldam_s > 0 or not loss_config.ldam_max_m >= 0:
      raise ValueError(f"loss.ldam_s={loss_config.ldam_s!r} must be > 0 and "
                       f"loss.ldam_max_m={loss_config.ldam_max_m!r} >= 0")
    margins = ldam_margins(class_counts, loss_config.ldam_max_m)
    s = loss_config.ldam_s

    def per_sample_loss(logits, labels, class_weights=None):
      return weighted(cross_entropy(ldam_logits(logits, labels, margins, s), labels), labels,
                      class_weights)

  return per_sample_loss


def class_weights_at(loss_config: ml_collections.ConfigDict, class_counts, epoch) -> jax.Array:
  """Class weights w (C,) at ``epoch`` (0-indexed; a Python int or a traced scalar).

  Ones unless ``loss.reweight == 'cb'``; then the class-balanced weights (beta = ``loss.cb_beta``)
  from epoch ``loss.drw_epoch`` on (deferred re-weighting), or always when drw_epoch < 0. In JAX's
  default float dtype (float64 under ``jax_enable_x64``); the base losses cast w to their own dtype.
  """
  reweight = loss_config.reweight
  if reweight not in REWEIGHTS:
    raise ValueError(f"loss.reweight={reweight!r} is unknown; expected one of {list(REWEIGHTS)}")
  ones = jnp.ones(len(class_counts))
  if reweight == "none":
    return ones
  balanced = jnp.asarray(class_balanced_weights(class_counts, loss_config.cb_beta))
  if loss_config.drw_epoch < 0:
    return balanced
  return jnp.where(jnp.asarray(epoch) >= loss_config.drw_epoch, balanced, ones)
