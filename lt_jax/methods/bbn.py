"""BBN: bilateral-branch network with cumulative learning (Zhou et al., CVPR 2020).

Each step draws two batches: (x_c, y_c) from ``dataset.sampler`` (the uniform instance sampler by
default, the conventional branch) and (x_r, y_r) from the reversed sampler (p_c proportional to
1 / n_c, the re-balancing branch). With the branch features f_c(x_c), f_r(x_r) mixed into the
logits z = W^T (s [alpha f_c, (1 - alpha) f_r]) + b (``lt_jax.models.bbn``), the loss is

  L = alpha E(z, y_c) + (1 - alpha) E(z, y_r),   alpha = 1 - (T / T_max)^2,

with E the base loss of ``loss.name`` (cross-entropy in the paper; mean over the batch), T the
0-indexed epoch and T_max = ``train.epochs`` (the official code's 1 - ((epoch - 1) / div_epoch)^2
with 1-indexed epochs and div_epoch = max epoch, for CIFAR's 200). alpha moves the attention from
the conventional branch (universal features) to the re-balancing one (the tail) over training.
Inference: both branches on the same image at alpha = 0.5 (the model's plain call).

Needs a BBN model (``model.name='bbn_resnet{6n+2}'``).
"""

import jax
import jax.numpy as jnp

from lt_jax import losses
from lt_jax import train_state as ts

MODEL_PREFIX = "bbn_resnet"


def extra_batches(config) -> dict[str, str]:
  """The re-balancing branch's batch: ``reversed_images``, ``reversed_labels``, ``reversed_ids``."""
  del config
  return {"reversed": "reversed"}


def cumulative_alpha(epoch, total_epochs: int, dtype=jnp.float32):
  """alpha = 1 - (T / T_max)^2 at 0-indexed epoch T (1 at the start, decaying as a parabola), in
  ``dtype`` (the parameters')."""
  t = jnp.asarray(epoch, dtype)
  return (total_epochs**2 - t * t) / total_epochs**2  # (T_max^2 - T^2) / T_max^2: 0 at T = T_max


def validate_config(config) -> None:
  """ValueError unless ``model.name`` is a bilateral-branch model, ``bbn_resnet{6n+2}``."""
  if not config.model.name.startswith(MODEL_PREFIX):
    raise ValueError(f"config.method='bbn' needs a bilateral-branch model: model.name="
                     f"{config.model.name!r} is not one; use 'bbn_resnet{{6n+2}}', e.g. bbn_resnet32")


def train_step(state: ts.TrainState, batch, ctx: ts.Context, mode=None):
  """One SGD step on alpha E(z, y_c) + (1 - alpha) E(z, y_r)."""
  del mode
  epoch = ts.epoch_of(state, ctx)
  alpha = cumulative_alpha(epoch, ctx.config.train.epochs, ts.param_dtype(state.params))
  per_sample_loss = losses.make_base_loss(ctx.config.loss, ctx.class_counts)
  class_weights = losses.class_weights_at(ctx.config.loss, ctx.class_counts, epoch)
  labels_c, labels_r = batch["labels"], batch["reversed_labels"]

  def branch_loss(logits, labels):
    values, weights = per_sample_loss(logits, labels, class_weights)
    return losses.weighted_mean(values, weights, ctx.axis_name)

  def loss_fn(params):
    logits, batch_stats = ts.forward(ctx.model, params, state.batch_stats, batch["images"], train=True,
                                     alpha=alpha, rebalanced_images=batch["reversed_images"])
    loss = alpha * branch_loss(logits, labels_c) + (1.0 - alpha) * branch_loss(logits, labels_r)
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  predicted = jnp.argmax(logits, -1)
  metrics = {
      "loss": loss,
      # the official code's training accuracy: alpha acc(y_c) + (1 - alpha) acc(y_r)
      "accuracy": alpha * jnp.mean(predicted == labels_c) + (1.0 - alpha) * jnp.mean(predicted == labels_r),
      "alpha": alpha,
  }
  return ts.apply_gradients(state, ctx, grads, batch_stats), metrics
