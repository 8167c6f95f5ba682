"""The meta re-weighting family on the bilevel core: L2RW, MW-Net, class-balanced meta re-weighting.

Each is a pair of losses for ``bilevel.hypergradient``; the lookahead is one plain SGD step at the
current scheduled learning rate alpha (the peers' off-by-one at decays is not reproduced).

* L2RW (Ren et al. 2018): eps = 0, inner = sum_i eps_i l_i(w); weights w_i = max(-dL_meta/deps_i, 0)
  normalised to sum 1 (uniform 1/B when all are zero).
* MW-Net (Shu et al. 2019): v_i = V_Theta(l_i), a 1-100-1 sigmoid MLP on the per-sample loss;
  inner = sum_i l_i v_i / sum_j v_j; Theta takes one step of its own optimiser on dL_meta/dTheta,
  then the real step uses the new weights as constants. As in the official code the loss fed to
  V is not detached in the lookahead.
* Class-balanced meta re-weighting (Jamal et al. 2020): w_i = w_{y_i} (effective number, beta)
  + eps_i with eps = -tau dL_meta/deps at eps = 0, recomputed every step; a pre-training phase of
  the plain base loss (epochs < ``cbmeta.start_epoch``) comes first. ``cbmeta.lookahead_reduction``
  'sum' (the official code and the slides' update equation; default) or 'mean' (the slides' Alg. 1
  line 9). ``cbmeta.clip_weights`` clips w_y + eps at 0: an option only, the method does not clip
  (the slides' L2RW-vs-ours table: "Clip negative eps: L2RW yes, Ours no"), nor does its code.
  ``cbmeta.meta_loss`` (``META_LOSSES``): the meta loss L_meta on the development batch.

L2RW and MW-Net use the mean cross-entropy of the meta batch as L_meta, as their papers.
"""

import jax
import jax.numpy as jnp
import optax

from lt_jax import losses
from lt_jax import bilevel
from lt_jax import optim
from lt_jax import train_state as ts
from lt_jax.models import weight_net


def per_sample_losses(ctx, logits, labels):
  """Unweighted per-sample base losses l_i (CE, focal or LDAM as ``config.loss.name``)."""
  per_sample_loss = losses.make_base_loss(ctx.config.loss, ctx.class_counts)
  values, _ = per_sample_loss(logits, labels, jnp.ones(len(ctx.class_counts)))
  return values


def training_losses(state, batch, ctx, params):
  """(l_i, logits, batch_stats) of the training batch in train mode."""
  logits, batch_stats = ts.forward(ctx.model, params, state.batch_stats, batch["images"], train=True)
  return per_sample_losses(ctx, logits, batch["labels"]), logits, batch_stats


META_LOSSES = ("base", "scaled_ce", "ce")


def cbmeta_meta_losses(ctx):
  """Per-sample meta loss l(z, y) of ``cbmeta.meta_loss`` on the development batch's outputs z.

  * ``base`` (default): the base loss L itself, unweighted (w = 1). The slides' Alg. 1 line 12
    writes L_{B_d} = 1/|B_d| sum_{i in B_d} L(f(x_i; theta~(eps)), y_i) with the same L as the
    weighted training loss of line 9, so for LDAM this is CE(s (z - m_y onehot(y))), margins
    included, and for focal the focal loss.
  * ``scaled_ce``: CE at the base loss's logit scale without its margins: CE(s z) for LDAM (s =
    ``loss.ldam_s``), CE(z) otherwise (the balanced-development-set reading).
  * ``ce``: CE(z) on the raw outputs (the official code, whose only base loss is CE). With LDAM's
    cosine classifier z is in [-1, 1] and the loss hardly saturates.
  """
  kind = ctx.config.cbmeta.meta_loss
  if kind == "base":
    return lambda logits, labels: per_sample_losses(ctx, logits, labels)
  scale = ctx.config.loss.ldam_s if kind == "scaled_ce" and ctx.config.loss.name == "ldam" else 1.0
  return lambda logits, labels: losses.cross_entropy(scale * logits, labels)


def meta_loss_fn(state, batch, ctx, per_sample=None):
  """L_meta(w): mean over the balanced meta batch of ``per_sample(z, y)`` (default CE), train-mode
  BN with the statistics dropped."""
  per_sample = per_sample or losses.cross_entropy

  def outer_loss(params):
    logits, _ = ts.forward(ctx.model, params, state.batch_stats, batch["meta_images"], train=True)
    return jnp.mean(per_sample(logits, batch["meta_labels"]))
  return outer_loss


def weighted_step(state, batch, ctx, weight_fn, normalise: bool = True, **changes):
  """The real update on sum_i s_i l_i / sum_i s_i (or / B when not ``normalise``), sums over the
  global batch, with s = weight_fn(l) held constant."""
  def loss_fn(params):
    values, logits, batch_stats = training_losses(state, batch, ctx, params)
    weights = jax.lax.stop_gradient(weight_fn(values))
    loss = (losses.weighted_mean(values, weights, ctx.axis_name) if normalise
            else jnp.mean(weights * values))
    return loss, (logits, batch_stats, weights)

  (loss, (logits, batch_stats, weights)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = ts.classification_metrics(logits, batch["labels"], loss)
  metrics["weight_max"] = jnp.max(weights)
  return ts.apply_gradients(state, ctx, grads, batch_stats, **changes), metrics


def eps_gradient(state, batch, ctx, sample_weights, reduction: str, meta_losses=None):
  """(L_meta(w_hat), dL_meta/deps at eps = 0) for inner = reduce_i l_i (s_i + eps_i); L_meta the
  mean of ``meta_losses`` (default CE) on the meta batch."""
  def inner_loss(params, eps):  # this device's share: D * local sum, or the local mean
    values, _, _ = training_losses(state, batch, ctx, params)
    weighted = values * (sample_weights + eps)
    return jnp.sum(weighted) * ts.device_count(ctx) if reduction == "sum" else jnp.mean(weighted)

  eps = jnp.zeros(batch["labels"].shape, jnp.result_type(sample_weights, ts.param_dtype(state.params)))
  return bilevel.hypergradient(inner_loss, meta_loss_fn(state, batch, ctx, meta_losses), state.params,
                               eps, ctx.lr_fn(state.step), axis_name=ctx.axis_name,
                               per_device_hparams=True)


# --- L2RW ------------------------------------------------------------------------------------------

def l2rw_weights(grad_eps, axis_name=None):
  """w_i = max(-g_i, 0) / sum_j max(-g_j, 0) over the global batch; uniform 1/B when all are 0."""
  w = jnp.maximum(-grad_eps, 0.0)
  total, count = jnp.sum(w), w.shape[0]
  if axis_name:
    total, count = jax.lax.psum(total, axis_name), count * jax.lax.axis_size(axis_name)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / count)


def l2rw_step(state, batch, ctx, mode=None):
  del mode
  meta_loss, grad_eps = eps_gradient(state, batch, ctx, 0.0, "sum")
  weights = l2rw_weights(grad_eps, ctx.axis_name)
  state, metrics = weighted_step(state, batch, ctx, lambda _: weights)
  metrics.update(meta_loss=meta_loss, zero_weight_fraction=jnp.mean(weights == 0))
  return state, metrics


# --- MW-Net ----------------------------------------------------------------------------------------

def mwnet_optimizer(config):
  c = config.mwnet
  return optim.sgd(c.lr, c.momentum, c.nesterov, c.weight_decay)


def mwnet_init(rng, variables, ctx):
  del variables
  theta = weight_net.WeightNet(ctx.config.mwnet.hidden).init(rng, jnp.zeros((1,)))["params"]
  return {"theta": theta, "opt_state": mwnet_optimizer(ctx.config).init(theta)}


def mwnet_step(state, batch, ctx, mode=None):
  del mode
  vnet = weight_net.WeightNet(ctx.config.mwnet.hidden)

  def weights(theta, values):
    return vnet.apply({"params": theta}, values)

  def inner_loss(params, theta):  # sum_i l_i v_i / sum_j v_j (normalised over the global batch)
    values, _, _ = training_losses(state, batch, ctx, params)
    return losses.weighted_mean(values, weights(theta, values), ctx.axis_name)

  theta = state.hparams["theta"]
  meta_loss, grad_theta = bilevel.hypergradient(inner_loss, meta_loss_fn(state, batch, ctx), state.params,
                                             theta, ctx.lr_fn(state.step), axis_name=ctx.axis_name)
  updates, opt_state = mwnet_optimizer(ctx.config).update(grad_theta, state.hparams["opt_state"], theta)
  theta = optax.apply_updates(theta, updates)
  state, metrics = weighted_step(state, batch, ctx, lambda values: weights(theta, values),
                                 hparams={"theta": theta, "opt_state": opt_state})
  metrics["meta_loss"] = meta_loss
  return state, metrics


# --- Class-balanced meta re-weighting (Jamal et al.) -----------------------------------------------

def cbmeta_mode(epoch, ctx):
  return "meta" if epoch >= ctx.config.cbmeta.start_epoch else "pretrain"


def cbmeta_step(state, batch, ctx, mode="meta"):
  cfg = ctx.config.cbmeta
  if mode == "pretrain":
    return plain_step(state, batch, ctx)
  class_weights = jnp.asarray(losses.class_balanced_weights(ctx.class_counts, ctx.config.loss.cb_beta),
                              ts.param_dtype(state.params))
  w_y = class_weights[batch["labels"]]
  meta_loss, grad_eps = eps_gradient(state, batch, ctx, w_y, cfg.lookahead_reduction,
                                     cbmeta_meta_losses(ctx))
  eps = -cfg.tau * grad_eps
  weights = w_y + eps
  if cfg.clip_weights:
    weights = jnp.maximum(weights, 0.0)
  state, metrics = weighted_step(state, batch, ctx, lambda _: weights, normalise=False)
  metrics.update(meta_loss=meta_loss, eps_abs_mean=jnp.mean(jnp.abs(eps)))
  return state, metrics


def plain_step(state, batch, ctx):
  """The pre-training phase: the unweighted mean base loss."""
  return weighted_step(state, batch, ctx, jnp.ones_like)

