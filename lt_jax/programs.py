"""The jitted device programs of a run: the in-memory epoch, the streamed step, the head step, predict.

In memory, the long-tailed uint8 images live on the device; one jitted call runs the steps of an
epoch under ``lax.scan`` (batch sampling, pad-crop-flip, normalisation and the method's step all
on device) under ``shard_map`` over every device (``lt_jax.parallel``) and, with ``replicas = R >
1``, under ``vmap`` over R independent states. Streamed, each step takes a global uint8 batch
sharded over the devices. Randomness is a function of (seed, step), so a run resumed from a
checkpoint equals an uninterrupted one.
"""

import dataclasses
import functools

import jax
from jax.sharding import PartitionSpec
import jax.numpy as jnp
import optax

from lt_jax import parallel
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.data import samplers


def batch_sampler(config, class_counts, labels, kind: str | None = None):
  """ids(key, epoch_order, index_in_epoch) of one global training batch for ``dataset.sampler``."""
  kind = kind or config.dataset.sampler
  batch_size = config.train.batch_size
  num_train = len(labels)
  if kind == "instance":
    def instance_ids(key, order, index_in_epoch):
      del key
      return order[(index_in_epoch * batch_size + jnp.arange(batch_size)) % num_train]
    return instance_ids
  probs = samplers.class_probabilities(class_counts, kind)
  index = samplers.class_index(labels, len(class_counts))
  return lambda key, order, index_in_epoch: samplers.sample_ids(key, index, probs, batch_size)


def device_batch(key, arrays: dict, order, index_in_epoch, *, ctx: ts.Context, method, mean, std,
                 meta_batch: int) -> dict:
  """This device's share of the global training (and meta) batch of one step.

  With the instance sampler each epoch visits a fresh permutation ``order`` of the training set
  in batches of B (the last batch wraps around to the permutation's start so every batch has the
  same shape); class-aware samplers (``dataset.sampler``) draw each batch anew. The sample ids and
  the augmentation draws are made for the global batch (cheap integers), then each device
  gathers and augments only its 1/D slice (``parallel.local_slice``): the same global batch for
  any device count, with no work repeated D times. Extra batches of other samplers
  (``method.extra_batches``, e.g. BBN's reversed sampler) arrive as ``{name}_images``, ...
  """
  config = ctx.config
  local = lambda tree: jax.tree.map(lambda x: parallel.local_slice(x, ctx.axis_name), tree)
  draws = {"": batch_sampler(config, ctx.class_counts, ctx.train_labels)}
  draws.update({f"{name}_": batch_sampler(config, ctx.class_counts, ctx.train_labels, kind)
                for name, kind in method.extra_batches(config).items()})

  def augmented(aug_key, images, ids):
    aug = augment.crop_flip_draws(aug_key, ids.shape[0], pad=int(config.augment.pad))
    ids, aug = local((ids, aug))
    return ids, augment.transform_drawn(images[ids], aug, config.augment, mean, std)

  train_key, meta_key, meta_aug_key = jax.random.split(key, 3)
  batch = {}
  for salt, (prefix, draw) in enumerate(draws.items()):
    sample_key, aug_key = jax.random.split(jax.random.fold_in(train_key, salt))
    ids, batch[f"{prefix}images"] = augmented(
        aug_key, arrays["train_images"], draw(sample_key, order, index_in_epoch))
    batch[f"{prefix}labels"] = arrays["train_labels"][ids]
    batch[f"{prefix}ids"] = ids
  if meta_batch:
    meta_ids = jax.random.permutation(meta_key, arrays["meta_labels"].shape[0])[:meta_batch]
    meta_ids, batch["meta_images"] = augmented(meta_aug_key, arrays["meta_images"], meta_ids)
    batch["meta_labels"] = arrays["meta_labels"][meta_ids]
  return batch


def run_steps(state: ts.TrainState, arrays: dict, first_step, *, num_steps: int, mode,
              ctx: ts.Context, method, mean, std, meta_batch: int, unroll: bool = False):
  """Steps ``first_step .. first_step + num_steps - 1`` of the current epoch under ``lax.scan``
  (each on its ``device_batch``); returns (state, mean metrics). ``unroll`` writes the steps out
  instead of a loop (see ``steps_per_call``)."""
  epoch = ts.epoch_of(state, ctx)
  order = jax.random.permutation(ts.epoch_key(state, epoch), ctx.num_train)

  def step(state, index_in_epoch):
    batch = device_batch(ts.step_key(state, salt=1), arrays, order, index_in_epoch, ctx=ctx,
                         method=method, mean=mean, std=std, meta_batch=meta_batch)
    lr = ctx.lr_fn(state.step)
    state, metrics = method.train_step(state, batch, ctx, mode)
    return state, ts.device_mean({**metrics, "lr": lr}, ctx)

  if unroll:  # straight-line code, no while loop (not even lax.scan(unroll=True) avoids one)
    per_step = []
    for i in range(num_steps):
      state, step_metrics = step(state, first_step + i)
      per_step.append(step_metrics)
    metrics = jax.tree.map(lambda *values: jnp.stack(values), *per_step)
  else:
    state, metrics = jax.lax.scan(step, state, first_step + jnp.arange(num_steps))
  return state, jax.tree.map(jnp.mean, metrics)


def steps_per_call(ctx: ts.Context) -> int:
  """Steps per jitted call: ``train.steps_per_call``, or by default the whole epoch in one
  ``lax.scan`` on accelerators and one step per call on CPU (XLA:CPU runs a ResNet-32 step ~25x
  slower inside a loop body than as straight-line code: 41 s against 1.7 s, measured)."""
  wanted = ctx.config.train.get("steps_per_call", 0)
  if wanted:
    return min(wanted, ctx.steps_per_epoch)
  return 1 if jax.default_backend() == "cpu" else ctx.steps_per_epoch


def call_plan(ctx: ts.Context) -> list[tuple[int, int]]:
  """(first_step, num_steps) of each jitted call of an epoch."""
  size = steps_per_call(ctx)
  return [(first, min(size, ctx.steps_per_epoch - first)) for first in range(0, ctx.steps_per_epoch, size)]


def make_steps_fn(ctx: ts.Context, method, mesh, *, mean, std, meta_batch: int):
  """jit(shard_map(vmap?(run_steps))): (state, arrays, first_step, mode, num_steps) ->
  (state, mean metrics); the state is donated."""
  unroll = steps_per_call(ctx) < ctx.steps_per_epoch
  replicas = ctx.config.replicas
  ctx = dataclasses.replace(ctx, axis_name=parallel.AXIS)

  def steps(state, arrays, first_step, mode, num_steps):
    fn = functools.partial(run_steps, num_steps=num_steps, mode=mode, ctx=ctx, method=method,
                           mean=mean, std=std, meta_batch=meta_batch, unroll=unroll)
    if replicas > 1:
      fn = jax.vmap(fn, in_axes=(0, None, None))
    return parallel.data_parallel(fn, mesh)(state, arrays, first_step)

  return jax.jit(steps, static_argnames=("mode", "num_steps"), donate_argnums=0)


def run_epoch(steps_fn, state: ts.TrainState, arrays: dict, mode, ctx: ts.Context, on_call=None):
  """One epoch as the calls of ``call_plan``; returns (state, metrics averaged over its steps).
  ``on_call(steps done in the epoch, metrics)`` after each call (progress lines)."""
  totals = None
  for first, num_steps in call_plan(ctx):
    state, metrics = steps_fn(state, arrays, first, mode, num_steps)
    if on_call is not None:
      on_call(first + num_steps, metrics)
    weighted = jax.tree.map(lambda m, n=num_steps: m * n, metrics)
    totals = weighted if totals is None else jax.tree.map(jnp.add, totals, weighted)
  return state, jax.tree.map(lambda t: t / ctx.steps_per_epoch, totals)


def normalised(batch: dict, mean, std) -> dict:
  """``batch`` with its uint8 ``images`` (and ``meta_images``) normalised to float32."""
  out = dict(batch)
  for key in ("images", "meta_images"):
    if key in out:
      out[key] = augment.normalize(out[key], mean, std)
  return out


def make_step_fn(ctx: ts.Context, method, mesh, *, mean, std):
  """jit(shard_map): (state, global uint8 batch, mode) -> (state, metrics) of a streamed step;
  the state is donated.

  The batch comes in sharded over the ``data`` axis, so each device already holds its slice (no
  ``parallel.local_batch``); the state and the metrics (device means) are replicated.
  """
  ctx = dataclasses.replace(ctx, axis_name=parallel.AXIS)

  def local_step(state, batch, mode):
    lr = ctx.lr_fn(state.step)
    state, metrics = method.train_step(state, normalised(batch, mean, std), ctx, mode)
    return state, ts.device_mean({**metrics, "lr": lr}, ctx)

  def step(state, batch, mode):
    replicated, sharded = PartitionSpec(), PartitionSpec(parallel.AXIS)
    fn = jax.shard_map(functools.partial(local_step, mode=mode), mesh=mesh,
                       in_specs=(replicated, sharded), out_specs=replicated, check_vma=False)
    return fn(state, batch)

  return jax.jit(step, static_argnames="mode", donate_argnums=0)


@functools.partial(jax.jit, donate_argnums=0)
def accumulate(totals, metrics):
  """Running sums of the step metrics, kept on the device until the end of the epoch."""
  return jax.tree.map(jnp.add, totals, metrics)


SAMPLE_SALT, IMAGE_SALT, FEATURE_SALT = 0, 1, 2  # the phase-II step keys: ids, crop / flip, synthesis


def head_step(state: ts.TrainState, ids, images, *, head, tx):
  """One SGD step of a phase-II head (``state.hparams['head']``) on cross-entropy of the features
  of the normalised ``images`` of training samples ``ids``; returns (state, metrics). Both feeds
  (images gathered on the device, or decoded by the streamed feed) run this step."""
  pooled, labels, extra = head.features(ts.step_key(state, FEATURE_SALT), state.hparams["head"],
                                        images, ids)
  pooled, labels = jax.lax.stop_gradient((pooled, labels))

  def loss_fn(h):
    logits = head.logits(h, pooled)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.hparams["head"])
  updates, opt_state = tx.update(grads, state.opt_state, state.hparams["head"])
  new_head = optax.apply_updates(state.hparams["head"], updates)
  state = state.replace(step=state.step + 1, opt_state=opt_state, hparams={"head": new_head})
  return state, {**ts.classification_metrics(logits, labels, loss), **extra}


def head_ids(state: ts.TrainState, *, head, length: int):
  """(length, B) sample ids of the next ``length`` phase-II steps: a function of (seed, step)
  only, so the streamed feed decodes them ahead of the steps."""
  keys = jax.vmap(lambda step: ts.step_key(state.replace(step=step), SAMPLE_SALT))(
      state.step + jnp.arange(length))
  return jax.vmap(head.sample)(keys)


def head_steps(state: ts.TrainState, *, head, tx, length: int, images):
  """``length`` phase-II steps under ``lax.scan`` with the images on the device: ``images(key,
  ids)`` gathers and augments them; returns (state, mean metrics)."""

  def step(state, _):
    ids = head.sample(ts.step_key(state, SAMPLE_SALT))
    return head_step(state, ids, images(ts.step_key(state, IMAGE_SALT), ids), head=head, tx=tx)

  state, metrics = jax.lax.scan(step, state, None, length=length)
  return state, jax.tree.map(jnp.mean, metrics)


def predict(params, batch_stats, images, *, model, mean, std, batch_size: int):
  """Eval-mode logits of uint8 ``images`` in fixed-size chunks (one compile for any set size)."""
  num = images.shape[0]
  chunks = -(-num // batch_size)
  padded = jnp.pad(images, ((0, chunks * batch_size - num),) + ((0, 0),) * (images.ndim - 1))
  padded = padded.reshape(chunks, batch_size, *images.shape[1:])

  def chunk_logits(chunk):
    logits, _ = ts.forward(model, params, batch_stats, augment.eval_transform(chunk, mean, std),
                           train=False)
    return logits

  return jax.lax.map(chunk_logits, padded).reshape(chunks * batch_size, -1)[:num]


def make_predict_fn(ctx: ts.Context, mesh, *, mean, std, batch_size: int):
  """jit(shard_map): (params, batch_stats, images sharded over devices) -> logits, each device
  predicting its block in chunks of ``batch_size``. With replicas the logits are (R, N, C)."""
  replicas = ctx.config.replicas
  fn = functools.partial(predict, model=ctx.model, mean=mean, std=std, batch_size=batch_size)
  if replicas > 1:
    fn = jax.vmap(fn, in_axes=(0, 0, None))
  out_spec = PartitionSpec(*([None] * (replicas > 1)), parallel.AXIS)
  return jax.jit(jax.shard_map(fn, mesh=mesh, out_specs=out_spec,
                               in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(parallel.AXIS))))
