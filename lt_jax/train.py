"""train_and_evaluate(config, workdir): the training loop shared by every method.

The long-tailed uint8 images live on the device; one jitted call runs a whole epoch under
``lax.scan`` (batch sampling, pad-crop-flip, normalisation and the method's step all on device),
so the host only logs, evaluates and checkpoints between epochs. Randomness is a function of
(seed, step), so a run resumed from a checkpoint equals an uninterrupted one.

The epoch runs under ``shard_map`` over every device (``lt_jax.parallel``; one device is the
same program with trivial collectives), and with ``replicas = R > 1`` under ``vmap`` over R
independent states (seeds ``seed + r``), so one program trains R models for error bars.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import data as data_lib
from lt_jax import methods
from lt_jax import metric_writer
from lt_jax import metrics as metrics_lib
from lt_jax import models
from lt_jax import optim
from lt_jax import parallel
from lt_jax import plots
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.data import samplers
from lt_jax.models import convert_torchvision


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


def normalisation_stats(config: ml_collections.ConfigDict, data) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std from ``config.augment`` or, when empty, from the training images."""
  if len(config.augment.mean) and len(config.augment.std):
    mean, std = np.asarray(config.augment.mean, np.float32), np.asarray(config.augment.std, np.float32)
    channels = data.train.images.shape[-1]
    if mean.shape != (channels,) or std.shape != (channels,):
      raise ValueError(f"augment.mean / augment.std need {channels} values (one per channel); "
                       f"got {len(mean)} and {len(std)}")
    return mean, std
  return tuple(np.asarray(s, np.float32) for s in data_lib.channel_stats(data.train.images))


def compute_dtype(config):
  """None (float32 throughout) or bfloat16 activations with float32 parameters (``model.dtype``)."""
  return jnp.bfloat16 if config.model.get("dtype", "float32") == "bfloat16" else None


def build_context(config, data, axis_name: str | None = None) -> ts.Context:
  """The model, optimiser and schedule of a run on ``data`` (``axis_name``: see ``Context``)."""
  num_train = len(data.train.labels)
  if config.train.batch_size > num_train:
    raise ValueError(f"train.batch_size={config.train.batch_size} is larger than the "
                     f"{num_train} training images")
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  lr_fn = optim.learning_rate_schedule(config.optim, steps_per_epoch)
  return ts.Context(
      config=config,
      model=models.get_model(config.model, data.num_classes, dtype=compute_dtype(config)),
      tx=optim.make_optimizer(config.optim, lr_fn),
      lr_fn=lr_fn,
      class_counts=data.counts("train"),
      steps_per_epoch=steps_per_epoch,
      num_train=num_train,
      train_labels=np.asarray(data.train.labels),
      axis_name=axis_name,
  )


def init_state(config, ctx: ts.Context, method, input_shape, seed: int | None = None) -> ts.TrainState:
  """Fresh state from ``seed`` (default ``config.seed``): network variables, optimiser state, meta."""
  rng = jax.random.key(config.seed if seed is None else seed)
  init_rng, meta_rng, train_rng = jax.random.split(rng, 3)
  variables = models.init_variables(ctx.model, init_rng, (1, *input_shape))
  if config.model.get("init_checkpoint"):  # converted torchvision weights; the classifier stays fresh
    variables = convert_torchvision.load_pretrained(variables, config.model.init_checkpoint)
  params = variables["params"]
  return ts.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=ctx.tx.init(params),
      meta=method.init_meta(meta_rng, variables, ctx),
      rng=train_rng,
  )


def init_replicas(config, ctx: ts.Context, method, input_shape) -> ts.TrainState:
  """The state, or with ``replicas = R > 1`` R states (seeds seed..seed+R-1) stacked on axis 0."""
  if config.replicas == 1:
    return init_state(config, ctx, method, input_shape)
  states = [init_state(config, ctx, method, input_shape, config.seed + r) for r in range(config.replicas)]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def meta_batch_size(config, data, devices: int = 1) -> int:
  """The meta batch size, capped at the meta set's size (the whole CIFAR-10 meta set is 100) and
  rounded down to a multiple of the device count."""
  size = min(config.meta.batch_size, len(data.meta.labels)) // devices * devices
  if not size:
    raise ValueError(f"meta.batch_size={config.meta.batch_size} with {len(data.meta.labels)} meta "
                     f"images leaves no meta sample for each of the {devices} devices")
  return size


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


def run_steps(state: ts.TrainState, arrays: dict, first_step, *, num_steps: int, phase,
              ctx: ts.Context, method, mean, std, meta_batch: int, unroll: bool = False):
  """Steps ``first_step .. first_step + num_steps - 1`` of the current epoch under ``lax.scan``;
  returns (state, mean metrics). ``unroll`` writes the steps out instead of a loop (see
  ``steps_per_call``).

  With the instance sampler each epoch visits a fresh permutation of the training set in batches
  of B (the last batch wraps around to the permutation's start so every batch has the same
  shape); class-aware samplers (``dataset.sampler``) draw each batch anew. Every device builds
  the same global batch and keeps its own slice of it. A method may ask for extra batches from
  other samplers (``method.extra_batches(config) -> {name: sampler}``, e.g. BBN's reversed
  sampler): they arrive as ``{name}_images``, ``{name}_labels``, ``{name}_ids``.
  """
  config = ctx.config
  epoch = ts.epoch_of(state, ctx)
  order = jax.random.permutation(ts.epoch_key(state, epoch), ctx.num_train)
  extra = method.extra_batches(config) if hasattr(method, "extra_batches") else {}
  draws = {"": batch_sampler(config, ctx.class_counts, ctx.train_labels)}
  draws.update({f"{name}_": batch_sampler(config, ctx.class_counts, ctx.train_labels, kind)
                for name, kind in extra.items()})

  def training_batch(key, index_in_epoch):
    batch = {}
    for salt, (prefix, draw) in enumerate(draws.items()):
      sample_key, aug_key = jax.random.split(jax.random.fold_in(key, salt))
      ids = draw(sample_key, order, index_in_epoch)
      batch[f"{prefix}images"] = augment.train_transform(aug_key, arrays["train_images"][ids],
                                                         config.augment, mean, std)
      batch[f"{prefix}labels"] = arrays["train_labels"][ids]
      batch[f"{prefix}ids"] = ids
    return batch

  def step(state, index_in_epoch):
    train_key, meta_key, meta_aug_key = jax.random.split(ts.step_key(state, salt=1), 3)
    batch = training_batch(train_key, index_in_epoch)
    if meta_batch:
      meta_ids = jax.random.permutation(meta_key, arrays["meta_labels"].shape[0])[:meta_batch]
      batch["meta_images"] = augment.train_transform(
          meta_aug_key, arrays["meta_images"][meta_ids], config.augment, mean, std)
      batch["meta_labels"] = arrays["meta_labels"][meta_ids]
    lr = ctx.lr_fn(state.step)
    state, metrics = method.train_step(state, parallel.local_batch(batch, ctx.axis_name), ctx, phase)
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


def device_arrays(data, meta_batch: int, mesh) -> dict:
  """The uint8 training (and meta) arrays placed on every device once."""
  arrays = {"train_images": data.train.images, "train_labels": data.train.labels}
  if meta_batch:
    arrays.update(meta_images=data.meta.images, meta_labels=data.meta.labels)
  return parallel.replicate(arrays, mesh)


def steps_per_call(ctx: ts.Context) -> int:
  """Steps per jitted call: ``train.steps_per_call``, or by default the whole epoch in one
  ``lax.scan`` on accelerators and one step per call on CPU (XLA:CPU runs a ResNet-32 step ~25x
  slower inside a loop body than as straight-line code: 41 s against 1.7 s, measured)."""
  wanted = ctx.config.train.get("steps_per_call", 0)
  if wanted:
    return min(wanted, ctx.steps_per_epoch)
  return 1 if jax.default_backend() == "cpu" else ctx.steps_per_epoch


def make_steps_fn(run: "Run", mesh):
  """jit(shard_map(vmap?(run_steps))): (state, arrays, first_step, phase, num_steps) ->
  (state, mean metrics); the state is donated."""
  ctx = dataclasses.replace(run.ctx, axis_name=parallel.AXIS)
  unroll = steps_per_call(run.ctx) < run.ctx.steps_per_epoch

  def steps(state, arrays, first_step, phase, num_steps):
    fn = functools.partial(run_steps, num_steps=num_steps, phase=phase, ctx=ctx, method=run.method,
                           mean=run.mean, std=run.std, meta_batch=run.meta_batch, unroll=unroll)
    if run.ctx.config.replicas > 1:
      fn = jax.vmap(fn, in_axes=(0, None, None))
    return parallel.data_parallel(fn, mesh)(state, arrays, first_step)

  return jax.jit(steps, static_argnames=("phase", "num_steps"), donate_argnums=0)


def call_plan(ctx: ts.Context) -> list[tuple[int, int]]:
  """(first_step, num_steps) of each jitted call of an epoch."""
  size = steps_per_call(ctx)
  return [(first, min(size, ctx.steps_per_epoch - first)) for first in range(0, ctx.steps_per_epoch, size)]


def run_epoch(steps_fn, state: ts.TrainState, arrays: dict, phase, ctx: ts.Context):
  """One epoch as the calls of ``call_plan``; returns (state, metrics averaged over its steps)."""
  totals = None
  for first, num_steps in call_plan(ctx):
    state, metrics = steps_fn(state, arrays, first, phase, num_steps)
    weighted = jax.tree.map(lambda m, n=num_steps: m * n, metrics)
    totals = weighted if totals is None else jax.tree.map(jnp.add, totals, weighted)
  return state, jax.tree.map(lambda t: t / ctx.steps_per_epoch, totals)


def make_predict_fn(run: "Run", mesh, num_test: int):
  """jit(shard_map): (params, batch_stats, padded test images) -> logits, test set split over devices.

  With replicas the logits are (R, N, C).
  """
  config = run.ctx.config
  fn = functools.partial(predict, model=run.ctx.model, mean=run.mean, std=run.std,
                         batch_size=min(config.train.eval_batch_size, -(-num_test // mesh.size)))
  if config.replicas > 1:
    fn = jax.vmap(fn, in_axes=(0, 0, None))
  out_spec = jax.sharding.PartitionSpec(*([None] * (config.replicas > 1)), parallel.AXIS)
  return jax.jit(jax.shard_map(fn, mesh=mesh, out_specs=out_spec,
                               in_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(),
                                         jax.sharding.PartitionSpec(parallel.AXIS))))


def summarise(eval_records: list[dict]) -> dict:
  """Final-epoch and best-epoch figures from the evaluation records."""
  final = eval_records[-1]
  best = min(eval_records, key=lambda r: r["top1_error"])
  keys = ("top1_error", "top5_error", "many_accuracy", "medium_accuracy", "few_accuracy")
  return {
      "final_epoch": final["epoch"],
      **{f"final_{k}": final[k] for k in keys},
      "best_epoch": best["epoch"],
      **{f"best_{k}": best[k] for k in keys},
      "final_per_class_recall": final["per_class_recall"],
  }


def write_json_atomic(path: str, value) -> None:
  """Writes JSON to ``path`` through a temporary file, so readers never see half a file."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


@dataclasses.dataclass
class Run:
  """Everything built from a config before the loop: data, context, (restored) state."""
  data: Any
  ctx: ts.Context
  method: Any
  state: ts.TrainState
  mngr: Any
  start_epoch: int
  mean: np.ndarray
  std: np.ndarray
  meta_batch: int
  mesh: Any  # the data-parallel mesh; ctx.axis_name is None outside the shard_map'ed epoch


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config, loads the data, builds model and optimiser, restores the latest state.

  Also how later phases load a finished run (FSA phase II starts from a phase-I workdir).
  With ``replicas = R > 1`` every leaf of ``state`` has a leading axis of size R.
  """
  config_lib.validate(config)
  method = methods.get_method(config.method)
  os.makedirs(workdir, exist_ok=True)
  data = data_lib.load(config)
  if method.needs_meta_data(config) and not len(data.meta.labels):
    raise ValueError(f"config.method={config.method!r} needs balanced meta data: set meta.strategy "
                     "to 'meta' or 'development' (it is 'none')")
  ctx = build_context(config, data)
  mesh = parallel.data_mesh()
  parallel.per_device(config.train.batch_size, mesh.size, "train.batch_size")
  mean, std = normalisation_stats(config, data)
  meta_batch = meta_batch_size(config, data, mesh.size) if method.needs_meta_data(config) else 0
  state = parallel.replicate(init_replicas(config, ctx, method, data.train.images.shape[1:]), mesh)
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints)
  state, start_epoch = checkpointing.restore_latest(mngr, state)
  return Run(data, ctx, method, state, mngr, start_epoch, mean, std, meta_batch, mesh)


def replica_dirs(workdir: str, replicas: int) -> list[str]:
  """Where each replica's metrics, plots and summary go: the workdir itself, or workdir/replica{r}."""
  if replicas == 1:
    return [workdir]
  return [os.path.join(workdir, f"replica{r}") for r in range(replicas)]


def replica(tree, r: int, replicas: int):
  """Replica r's slice of a (possibly replica-stacked) pytree."""
  return tree if replicas == 1 else jax.tree.map(lambda x: x[r], tree)


def aggregate(summaries: list[dict]) -> dict:
  """Mean and (population) std over replicas of every scalar summary field, plus each replica's."""
  result = {"replicas": summaries}
  for key, value in summaries[0].items():
    values = [s[key] for s in summaries]
    if isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
      result[key] = float(np.mean(values))
      result[f"{key}_std"] = float(np.std(values))
  result["final_per_class_recall"] = [
      None if any(s["final_per_class_recall"][c] is None for s in summaries)
      else float(np.mean([s["final_per_class_recall"][c] for s in summaries]))
      for c in range(len(summaries[0]["final_per_class_recall"]))]
  return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config.method`` on the long-tailed data, evaluating and checkpointing per epoch.

  Re-running on the same workdir resumes from the latest checkpoint. Returns the summary (also in
  ``workdir/summary.json``): final- and best-epoch errors, shot-group accuracies, per-class recall;
  with ``replicas = R > 1`` their mean, ``*_std`` and each replica's (``workdir/replica{r}/``).
  A method with phases of its own (FSA, decoupling: ``method.run``) runs its own loop instead.
  With ``loader.stream`` the batches are streamed from disk (``lt_jax.stream``).
  """
  if config.get("loader", {}).get("stream", False):
    from lt_jax import stream  # pylint: disable=g-import-not-at-top  (stream imports this module)
    return stream.train_and_evaluate_streaming(config, workdir)
  method = methods.get_method(config.method)
  if hasattr(method, "run"):
    return method.run(config, workdir)
  run = setup(config, workdir)
  data, ctx, method, mngr, start_epoch = run.data, run.ctx, run.method, run.mngr, run.start_epoch
  state, replicas = run.state, config.replicas
  if jax.process_index() == 0 and not start_epoch:
    data_lib.save_selection(data, workdir)
    write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  logging.info("model %s: %d parameters; %d device(s), %d replica(s)", config.model.name,
               models.count_params(replica(state.params, 0, replicas)), run.mesh.size, replicas)
  if start_epoch:
    logging.info("resumed from the checkpoint of epoch %d in %s", start_epoch, workdir)

  arrays = device_arrays(data, run.meta_batch, run.mesh)
  num_test = len(data.test.labels)
  test_images = parallel.shard_leading(data.test.images, run.mesh)
  steps_fn = make_steps_fn(run, run.mesh)
  predict_fn = make_predict_fn(run, run.mesh, num_test)

  dirs = replica_dirs(workdir, replicas)
  writers = [metric_writer.MetricWriter(d) for d in dirs]
  epochs = config.train.epochs
  bar = tqdm.tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, unit="epoch",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  for epoch in bar:
    started = time.time()
    state, train_metrics = run_epoch(steps_fn, state, arrays, method.phase(epoch, ctx), ctx)
    train_metrics = jax.device_get(train_metrics)
    done = epoch + 1
    losses = np.atleast_1d(train_metrics["loss"])
    if not np.all(np.isfinite(losses)):
      last = mngr.latest_step()
      raise NonFiniteLossError(
          f"training loss is {losses.tolist()} in epoch {done}; stopped. The last good "
          f"checkpoint (epoch {last}) is kept in {workdir}/checkpoints; lower optim.lr or check the data.")
    seconds = time.time() - started
    evaluating = done % config.train.eval_every_epochs == 0 or done == epochs
    if evaluating:
      logits = multihost_utils.process_allgather(  # the test set is split over every host's devices
          predict_fn(state.params, state.batch_stats, test_images), tiled=True)[..., :num_test, :]
    errors = []
    for r, writer in enumerate(writers):
      values = {k: float(v) for k, v in replica(train_metrics, r, replicas).items()}
      values.update(epoch_seconds=seconds, compiles=steps_fn._cache_size())  # one per phase
      writer.write("train", done, int(np.ravel(state.step)[0]), values)
      if evaluating:
        result = metrics_lib.evaluate(replica(logits, r, replicas), data.test.labels, ctx.class_counts)
        writer.write("eval", done, int(np.ravel(state.step)[0]), result)
        errors.append(result["top1_error"])
    postfix = {"loss": f"{float(np.mean(losses)):.3f}"}
    if errors:
      postfix["err"] = f"{np.mean(errors):.2f}"
    bar.set_postfix(postfix)
    if done % config.train.checkpoint_every_epochs == 0 or done == epochs:
      checkpointing.save(mngr, state, done)
  for writer in writers:
    writer.close()
  run.state = state
  if hasattr(method, "finalize") and jax.process_index() == 0:
    method.finalize(run, workdir)

  summaries = []
  for r, folder in enumerate(dirs):
    eval_records = metric_writer.read_records(folder, "eval", max_epoch=epochs)
    summary = summarise(eval_records)
    summary["parameters"] = models.count_params(replica(state.params, r, replicas))
    summaries.append(summary)
    if jax.process_index() == 0 and config.train.plots:
      plots.write_all(folder, data.class_names, ctx.class_counts, eval_records[-1],
                      metric_writer.read_records(folder, "train", max_epoch=epochs), eval_records)
  summary = summaries[0] if replicas == 1 else aggregate(summaries)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    print(format_summary(summary, data.class_names, ctx.class_counts))
  return summary


def format_summary(summary: dict, class_names, train_counts) -> str:
  """Human-readable end-of-run report: errors, shot groups, per-class recall."""
  def spread(key):  # "+- std" over replicas, when there are several
    return f" +- {summary[key + '_std']:.2f}" if key + "_std" in summary else ""

  lines = [
      (f"mean of {len(summary['replicas'])} replicas: " if "replicas" in summary else "") +
      f"top-1 error: final {summary['final_top1_error']:.2f}{spread('final_top1_error')}% "
      f"(epoch {summary['final_epoch']:.0f}), best {summary['best_top1_error']:.2f}"
      f"{spread('best_top1_error')}% (epoch {summary['best_epoch']:.0f})",
      "shot groups (final): " + ", ".join(
          f"{g} {summary[f'final_{g}_accuracy']:.1f}%" for g in ("many", "medium", "few")
          if summary.get(f"final_{g}_accuracy") is not None),
      "per-class recall (final):",
  ]
  for name, count, recall in zip(class_names, train_counts, summary["final_per_class_recall"]):
    lines.append(f"  {name:>12s}  n={int(count):5d}  " + ("-" if recall is None else f"{100 * recall:5.1f}%"))
  return "\n".join(lines)
