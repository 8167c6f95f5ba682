"""Empirical risk minimisation with the classic long-tailed losses.

Cross-entropy, focal, class-balanced (effective number, beta) and LDAM, each with optional deferred
re-weighting (DRW): ``loss.reweight='cb'`` with ``loss.drw_epoch`` switches the class weights w_y on
at that epoch. The step minimises sum_i s_i l_i / sum_i s_i, where the base loss returns the
per-sample losses l_i and weights s_i (PyTorch's weighted-CE 'mean').
"""

import jax

from lt_jax import losses
from lt_jax import train_state as ts


def train_step(state: ts.TrainState, batch, ctx: ts.Context, mode=None):
  """One SGD step on the (re-weighted) base loss."""
  del mode
  per_sample_loss = losses.make_base_loss(ctx.config.loss, ctx.class_counts)
  class_weights = losses.class_weights_at(ctx.config.loss, ctx.class_counts, ts.epoch_of(state, ctx))

  def loss_fn(params):
    logits, batch_stats = ts.forward(ctx.model, params, state.batch_stats, batch["images"], train=True)
    values, weights = per_sample_loss(logits, batch["labels"], class_weights)
    return losses.weighted_mean(values, weights, ctx.axis_name), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = ts.classification_metrics(logits, batch["labels"], loss)
  return ts.apply_gradients(state, ctx, grads, batch_stats), metrics
