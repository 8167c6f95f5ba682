"""Learning-rate schedules and the SGD optimiser of the papers' recipes.

PyTorch SGD with weight decay adds wd * w to the gradient before momentum and applies the learning
rate after it; ``optax.chain(add_decayed_weights(wd), sgd(lr, momentum, nesterov))`` does the same.
Schedules are per epoch (the peers step them once per epoch), expressed as functions of the step.
``optim.no_decay`` leaves the parameters whose path matches one of its patterns out of the weight
decay (Cui et al.'s sigmoid / focal code: the last layer's bias).
"""

import fnmatch

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """alpha(step): linear per-epoch warm-up, then x decay_factor at each epoch in decay_epochs.

  Epoch e < W runs at lr (e + 1) / W (LDAM-DRW's warm-up); from epoch d in decay_epochs on the rate
  is multiplied by decay_factor (0.01 at 160 and 180 for LDAM and Jamal et al.).

  alpha is computed in JAX's default float dtype at call time: float32, or float64 under
  ``jax_enable_x64`` (float64 runs get an exact alpha, not a float32 one). Its users cast it to
  each parameter's dtype (``bilevel.lookahead_params``, optax's schedule scaling), so float32
  parameters stay float32 under x64 too.
  """
  base, warmup = float(optim.lr), int(optim.warmup_epochs)
  decay_epochs = tuple(int(e) for e in optim.decay_epochs)
  factor = float(optim.decay_factor)

  def schedule(step):
    epoch = jnp.asarray(step) // steps_per_epoch
    warm = jnp.where(epoch < warmup, (epoch + 1).astype(jnp.result_type(float)) / max(warmup, 1), 1.0)
    num_decays = sum((epoch >= e).astype(jnp.int32) for e in decay_epochs) if decay_epochs else 0
    return base * warm * factor ** num_decays

  return schedule


def decay_mask(no_decay: tuple[str, ...]):
  """params -> pytree of bools: False (no weight decay) where the parameter's path (``classifier/
  bias``) matches a ``no_decay`` fnmatch pattern; ValueError for a pattern that matches nothing."""
  patterns = tuple(no_decay)

  def mask(params):
    paths = jax.tree.map_with_path(
        lambda p, _: jax.tree_util.keystr(p, simple=True, separator="/"), params)
    for pattern in patterns:
      if not any(fnmatch.fnmatchcase(path, pattern) for path in jax.tree.leaves(paths)):
        raise ValueError(f"optim.no_decay pattern {pattern!r} matches no parameter; the "
                         f"parameters are e.g. {sorted(jax.tree.leaves(paths))[-4:]}")
    return jax.tree.map(lambda path: not any(fnmatch.fnmatchcase(path, pat) for pat in patterns),
                        paths)

  return mask


def sgd(lr: optax.ScalarOrSchedule, momentum: float, nesterov: bool, weight_decay: float,
        no_decay: tuple[str, ...] = ()):
  """PyTorch-equivalent SGD: decoupled-order weight decay (not on ``no_decay``'s parameters), then
  (Nesterov) momentum, then lr."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_mask(no_decay) if no_decay else None),
      optax.sgd(lr, momentum=momentum or None, nesterov=nesterov),
  )


def make_optimizer(optim: ml_collections.ConfigDict, lr_fn: optax.Schedule):
  """The main network's optimiser from ``config.optim``."""
  return sgd(lr_fn, optim.momentum, optim.nesterov, optim.weight_decay,
             tuple(optim.get("no_decay", ())))
