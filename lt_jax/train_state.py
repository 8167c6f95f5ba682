"""The training state and the few operations every method's step shares.

State is a ``flax.struct.dataclass`` of arrays only, so it is a pytree that jit donates, orbax
saves and vmap stacks. ``hparams`` holds what a method learns besides the network w (h: the V-net
parameters Theta, the modulator parameters phi, a phase-II head, and their optimiser state); it is
``{}`` for plain training.
"""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of real updates done
  params: Any  # w
  batch_stats: Any  # BatchNorm running statistics ({} for models without BatchNorm)
  opt_state: Any
  hparams: Any  # h: what the method learns besides w (Theta, phi, a head) and its optimiser state
  rng: jax.Array  # base key; the key of step t is fold_in(rng, t)


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
  """What a method's step needs that is fixed for a run; closed over by jit, never traced."""
  config: ml_collections.ConfigDict
  model: nn.Module
  tx: optax.GradientTransformation
  lr_fn: optax.Schedule
  class_counts: np.ndarray  # n_c of the long-tailed training set
  steps_per_epoch: int
  num_train: int
  train_labels: np.ndarray | None = None  # y of the training set (class-aware samplers)
  axis_name: str | None = None  # the data-parallel mesh axis inside shard_map; None on one device


def param_dtype(params) -> jnp.dtype:
  """The floating dtype of w (float32; float64 in gradient checks under x64): the dtype of the
  scalars a step mixes into w's arithmetic (cbmeta's w_y, BBN's alpha)."""
  return jnp.result_type(*jax.tree.leaves(params))


def device_mean(tree, ctx: Context):
  """Mean over the data-parallel devices (``lax.pmean``); the identity on one device."""
  return jax.lax.pmean(tree, ctx.axis_name) if ctx.axis_name else tree


def device_count(ctx: Context) -> int:
  """D, the number of data-parallel devices (1 outside shard_map)."""
  return jax.lax.axis_size(ctx.axis_name) if ctx.axis_name else 1


def device_sum(tree, ctx: Context):
  """Sum over the data-parallel devices (``lax.psum``); the identity on one device."""
  return jax.lax.psum(tree, ctx.axis_name) if ctx.axis_name else tree


def forward(model: nn.Module, params, batch_stats, images, *, train: bool, **kwargs):
  """Runs the model; in train mode returns (output, new batch_stats), else (output, batch_stats).

  Train mode normalises with batch statistics; the caller decides whether the returned running
  statistics are kept (real step) or dropped (lookahead and meta passes).
  """
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  if train and batch_stats:
    out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]
  return model.apply(variables, images, train=train, **kwargs), batch_stats


def apply_gradients(state: TrainState, ctx: Context, grads, batch_stats, **changes) -> TrainState:
  """The real update of w: optimiser step, new running statistics, step + 1.

  On several devices ``grads`` are each device's gradient of its share of the loss (a loss whose
  device mean is the global loss) and are averaged here; BatchNorm normalises with per-device
  batch statistics, and the running statistics are averaged so the state stays replicated.
  """
  grads, batch_stats = device_mean((grads, batch_stats), ctx)
  updates, opt_state = ctx.tx.update(grads, state.opt_state, state.params)
  return state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
      **changes,
  )


def epoch_of(state: TrainState, ctx: Context) -> jax.Array:
  """The 0-indexed epoch the current step belongs to (traced)."""
  return state.step // ctx.steps_per_epoch


def step_key(state: TrainState, salt: int = 0) -> jax.Array:
  """A key unique to this step (and salt), so resumed runs draw the same numbers."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), salt)


def epoch_key(state: TrainState, epoch) -> jax.Array:
  """The key of an epoch's batch order (a salt no step key uses)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, epoch), EPOCH_SALT)


EPOCH_SALT = 2**31 - 1


def classification_metrics(logits, labels, loss) -> dict[str, jax.Array]:
  """Per-step scalars: loss and top-1 accuracy on the (augmented) training batch."""
  return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

