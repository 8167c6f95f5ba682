"""One-phase training: ``setup`` builds a run from a validated config, ``fit`` trains it in the loop.

Two feeds plug into ``loop.run_epochs``: in memory, the uint8 arrays live on the device and one
jitted call runs the steps of an epoch (``programs.make_steps_fn``); streamed
(``loader.stream=True``), grain loaders decode each host's share of a batch while the device runs
the previous step (``programs.make_step_fn``). With ``replicas = R > 1`` (in memory) one program
trains R models (seeds ``seed + r``) for error bars. Call ``lt_jax.run.run``, which validates the
config once and dispatches two-phase methods, rather than this module directly.
"""

import dataclasses
import math
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import data as data_lib
from lt_jax import files
from lt_jax import loop
from lt_jax import methods
from lt_jax import metrics as metrics_lib
from lt_jax import models
from lt_jax import optim
from lt_jax import parallel
from lt_jax import programs
from lt_jax import progress as progress_lib
from lt_jax import provenance
from lt_jax import report
from lt_jax import train_state as ts
from lt_jax.data import grain_loader
from lt_jax.data import longtail
from lt_jax.data import stream
from lt_jax.models import convert_torchvision


def normalisation_stats(config: ml_collections.ConfigDict, train_images) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std from ``config.augment`` or, when empty, from the training images."""
  if len(config.augment.mean) and len(config.augment.std):
    mean, std = np.asarray(config.augment.mean, np.float32), np.asarray(config.augment.std, np.float32)
    channels = 3 if train_images is None else train_images.shape[-1]
    if mean.shape != (channels,) or std.shape != (channels,):
      raise ValueError(f"augment.mean / augment.std need {channels} values (one per channel); "
                       f"got {len(mean)} and {len(std)}")
    return mean, std
  return tuple(np.asarray(s, np.float32) for s in data_lib.channel_stats(train_images))


def compute_dtype(config):
  """None (float32 throughout) or bfloat16 activations with float32 parameters (``model.dtype``)."""
  return jnp.bfloat16 if config.model.get("dtype", "float32") == "bfloat16" else None


def build_context(config, *, class_counts, train_labels, axis_name: str | None = None) -> ts.Context:
  """The model, optimiser and schedule of a run on a training set with these labels and counts."""
  num_train = len(train_labels)
  if config.train.batch_size > num_train:
    raise ValueError(f"train.batch_size={config.train.batch_size} is larger than the "
                     f"{num_train} training images")
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  lr_fn = optim.learning_rate_schedule(config.optim, steps_per_epoch)
  return ts.Context(
      config=config,
      model=models.get_model(config.model, len(class_counts), dtype=compute_dtype(config)),
      tx=optim.make_optimizer(config.optim, lr_fn),
      lr_fn=lr_fn,
      class_counts=np.asarray(class_counts),
      steps_per_epoch=steps_per_epoch,
      num_train=num_train,
      train_labels=np.asarray(train_labels),
      axis_name=axis_name,
  )


def init_state(config, ctx: ts.Context, method, input_shape, seed: int | None = None) -> ts.TrainState:
  """Fresh state from ``seed`` (default ``config.seed``): network variables, optimiser state, meta."""
  rng = jax.random.key(config.seed if seed is None else seed)
  init_rng, hparams_rng, train_rng = jax.random.split(rng, 3)
  variables = models.init_variables(ctx.model, init_rng, (1, *input_shape))
  if config.model.get("init_checkpoint"):  # converted torchvision weights; the classifier stays fresh
    skip = ("classifier", *models.PRETRAINED_UNUSED.get(config.model.name, ()))
    variables = convert_torchvision.load_pretrained(variables, config.model.init_checkpoint, skip)
  params = variables["params"]
  if config.model.get("sigmoid_bias_init"):
    params = sigmoid_bias_init(params, len(ctx.class_counts))
  return ts.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=ctx.tx.init(params),
      hparams=method.init_hparams(hparams_rng, variables, ctx),
      rng=train_rng,
  )


def sigmoid_bias_init(params: dict, num_classes: int) -> dict:
  """``params`` with the classifier bias b = -log(C - 1), so every sigmoid starts at p = 1/C (Cui
  et al. 2019's sigmoid / focal code, ``bias_initializer=-log(out_dim - 1)``)."""
  classifier = params["classifier"]
  if "bias" not in classifier:
    raise ValueError("model.sigmoid_bias_init=True needs a classifier with a bias "
                     "(model.classifier='linear')")
  bias = jnp.full_like(classifier["bias"], -np.log(max(num_classes - 1, 1)))
  return {**params, "classifier": {**classifier, "bias": bias}}


def init_replicas(config, ctx: ts.Context, method, input_shape) -> ts.TrainState:
  """The state, or with ``replicas = R > 1`` R states (seeds seed..seed+R-1) stacked on axis 0."""
  if config.replicas == 1:
    return init_state(config, ctx, method, input_shape)
  states = [init_state(config, ctx, method, input_shape, config.seed + r) for r in range(config.replicas)]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def meta_batch_size(config, num_meta: int, devices: int = 1) -> int:
  """The meta batch size, capped at the meta set's size (the whole CIFAR-10 meta set is 100) and
  rounded down to a multiple of the device count."""
  size = min(config.meta.batch_size, num_meta) // devices * devices
  if not size:
    raise ValueError(f"meta.batch_size={config.meta.batch_size} with {num_meta} meta images leaves "
                     f"no meta sample for each of the {devices} devices")
  if size != min(config.meta.batch_size, num_meta):
    logging.warning("meta batch of %d cut to %d: a multiple of the %d devices",
                    min(config.meta.batch_size, num_meta), size, devices)
  return size


@dataclasses.dataclass
class Run:
  """Everything built from a config before the loop; ``data`` (in memory) or ``streamed`` is set."""
  config: ml_collections.ConfigDict
  method: methods.Method
  ctx: ts.Context
  mesh: Any  # the data-parallel mesh; ctx.axis_name is None outside the shard_map'ed programs
  state: ts.TrainState
  mngr: Any
  start_epoch: int
  mean: np.ndarray
  std: np.ndarray
  meta_batch: int
  class_names: tuple[str, ...]
  data: data_lib.LongTailData | None = None
  streamed: stream.StreamData | None = None
  loaders: dict | None = None  # the streamed run's grain loaders, at the restored positions
  in_epoch: dict | None = None  # restored position inside epoch start_epoch + 1 (streamed)


@dataclasses.dataclass(frozen=True)
class Trained:
  """What a method's ``finalize`` sees of one trained replica."""
  ctx: ts.Context
  state: ts.TrainState
  mean: np.ndarray
  std: np.ndarray
  test_images: np.ndarray | None  # None when streamed
  test_labels: np.ndarray
  class_names: tuple[str, ...]


def setup(config: ml_collections.ConfigDict, workdir: str, read_only: bool = False) -> Run:
  """Loads the data of a validated config, builds model and optimiser, restores the latest state.

  Also how a two-phase method loads its phase-I run (``read_only``: another run's workdir, never
  written). With ``replicas = R > 1`` every leaf of ``state`` has a leading axis of size R.
  """
  method = methods.get_method(config.method)
  needs_meta = method.needs_meta_data(config)
  if not read_only:
    files.makedirs(workdir)
  data = source = None
  if config.loader.stream:
    source = stream.load(config, needs_meta)
    class_names, train_labels = source.splits.class_names, source.splits.train.labels
    num_meta = 0 if source.meta is None else len(source.meta)
    size = config.dataset.image_size or 224
    input_shape, (mean, std) = (size, size, 3), normalisation_stats(config, None)
  else:
    data = data_lib.load(config)
    class_names, train_labels, num_meta = data.class_names, data.train.labels, len(data.meta)
    input_shape, (mean, std) = data.train.images.shape[1:], normalisation_stats(config, data.train.images)
  if needs_meta and not num_meta:
    raise ValueError(f"config.method={config.method!r} needs balanced meta data, and "
                     f"meta.strategy={config.meta.strategy!r} selected none from {config.dataset.name!r}")
  ctx = build_context(config, class_counts=longtail.per_class_counts(train_labels, len(class_names)),
                      train_labels=train_labels)
  mesh = parallel.data_mesh()
  parallel.per_device(config.train.batch_size, mesh.size, "train.batch_size")
  meta_batch = meta_batch_size(config, num_meta, mesh.size) if needs_meta else 0
  loaders = None
  if source is not None:
    parallel.per_device(config.train.eval_batch_size, mesh.size, "train.eval_batch_size")
    if not read_only:  # a run only read (phase I, evaluate) draws no batches
      loaders = {"train": grain_loader.make_train_loader(config, source.splits.train)}
      if meta_batch:
        loaders["meta"] = grain_loader.make_train_loader(config, source.meta, seed_offset=1,
                                                        batch_size=meta_batch)
  state = parallel.replicate(init_replicas(config, ctx, method, input_shape), mesh)
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints, read_only)
  state, start_epoch = checkpointing.restore_latest(mngr, state, loaders)
  in_epoch = None
  if loaders:  # a streamed epoch stopped by a signal between steps
    found = checkpointing.restore_in_epoch(mngr, state, loaders, start_epoch * ctx.steps_per_epoch)
    if found:
      state, in_epoch = found
      start_epoch = in_epoch["epoch"]
  return Run(config, method, ctx, mesh, state, mngr, start_epoch, mean, std, meta_batch,
             tuple(class_names), data, source, loaders, in_epoch)


def selection(run: Run) -> dict:
  """The run's ``data_selection.json`` record (one schema for both feeds)."""
  if run.data is not None:
    return run.data.selection()
  src, config = run.streamed, run.config
  no_meta = np.zeros((0,), np.int64)
  meta_split = src.meta_split or "train"
  return data_lib.selection_record(
      dataset=config.dataset.name, class_names=run.class_names,
      labels={"train": src.splits.train.labels,
              "meta": no_meta if src.meta is None else src.meta.labels, "test": src.test.labels},
      indices={"train": np.arange(len(src.splits.train)), "meta": src.meta_indices,
               "test": src.test_indices},
      image_shape=(config.dataset.image_size or 224,) * 2 + (3,),
      settings={**data_lib.settings_of(config), "meta.from": meta_split})


def step_progress(run: Run) -> progress_lib.StepProgress:
  """The run's step-level progress lines (``train.log_every_steps``)."""
  steps = run.ctx.steps_per_epoch
  return progress_lib.StepProgress(progress_lib.every_steps(run.config),
                                   total=run.config.train.epochs * steps,
                                   done=run.start_epoch * steps, steps_per_epoch=steps,
                                   batch_size=run.config.train.batch_size)


def memory_feed(run: Run):
  """train_epoch(state, epoch) of the in-memory feed: the scanned epoch."""
  data, ctx, mesh, replicas = run.data, run.ctx, run.mesh, run.config.replicas
  arrays = {"train_images": data.train.images, "train_labels": data.train.labels}
  if run.meta_batch:
    arrays.update(meta_images=data.meta.images, meta_labels=data.meta.labels)
  arrays = parallel.replicate(arrays, mesh)
  steps_fn = programs.make_steps_fn(ctx, run.method, mesh, mean=run.mean, std=run.std,
                                    meta_batch=run.meta_batch)
  progress = step_progress(run)

  def train_epoch(state, epoch):
    state, metrics = programs.run_epoch(
        steps_fn, state, arrays, run.method.mode(epoch, ctx), ctx,
        on_call=lambda done, m: progress.update(epoch * ctx.steps_per_epoch + done, m.get("loss")))
    return state, [{**m, "compiles": steps_fn._cache_size()} for m in loop.per_replica(metrics, replicas)]

  return train_epoch


def stream_feed(run: Run):
  """train_epoch(state, epoch) of the streamed feed: per-step calls on decoded batches."""
  ctx, mesh, loaders = run.ctx, run.mesh, run.loaders
  step_fn = programs.make_step_fn(ctx, run.method, mesh, mean=run.mean, std=run.std)
  progress = step_progress(run)

  def train_epoch(state, epoch):
    started, mode, first, totals = time.time(), run.method.mode(epoch, ctx), 0, None
    if run.in_epoch is not None and run.in_epoch["epoch"] == epoch:  # resumed inside this epoch
      first, totals = run.in_epoch["steps_done"], run.in_epoch["totals"]
      run.in_epoch = None
    local = stream.next_batch(loaders["train"], loaders.get("meta"))
    for index in range(first, ctx.steps_per_epoch):
      state, metrics = step_fn(state, stream.global_batch(local, mesh), mode)
      progress.update(epoch * ctx.steps_per_epoch + index + 1, metrics.get("loss"))
      totals = metrics if totals is None else programs.accumulate(totals, metrics)
      if index + 1 < ctx.steps_per_epoch:
        if loop.stop_requested_in_epoch():  # a long epoch: stop between steps
          path = checkpointing.save_in_epoch(run.mngr, state, epoch=epoch, steps_done=index + 1,
                                             totals=totals, loaders=loaders)
          raise loop.Preempted(
              f"stopped by a signal after step {index + 1} of {ctx.steps_per_epoch} in epoch "
              f"{epoch + 1}; checkpointed in {path}: run the same command again to resume")
        local = stream.next_batch(loaders["train"], loaders.get("meta"))  # decoded while the
        # device runs the step just issued
    metrics = {k: v / ctx.steps_per_epoch for k, v in loop.per_replica(totals, 1)[0].items()}
    seconds = time.time() - started
    return state, [{**metrics, "compiles": step_fn._cache_size(),
                    "images_per_second": ctx.steps_per_epoch * run.config.train.batch_size / seconds}]

  return train_epoch


def predictions(run: Run, split: str = "test"):
  """(params, batch_stats) -> (eval-mode logits, labels) of the run's un-augmented ``split``
  ('test' or 'train') from its feed: the sharded uint8 arrays, or one streamed evaluation pass
  (rows in the gathered order, each with its label). With replicas the logits are (R, N, C)."""
  config, ctx, mesh = run.config, run.ctx, run.mesh
  gather = lambda x: multihost_utils.process_allgather(x, tiled=True)
  if run.data is not None:
    arrays = getattr(run.data, split)
    num, labels = len(arrays.labels), arrays.labels
    images = parallel.shard_leading(arrays.images, mesh)  # split over every host's devices
    predict_fn = programs.make_predict_fn(
        ctx, mesh, mean=run.mean, std=run.std,
        batch_size=min(config.train.eval_batch_size, -(-num // mesh.size)))
    return lambda params, batch_stats: (
        gather(predict_fn(params, batch_stats, images))[..., :num, :], labels)
  records = run.streamed.test if split == "test" else run.streamed.splits.train
  predict_fn = programs.make_predict_fn(ctx, mesh, mean=run.mean, std=run.std,
                                        batch_size=config.train.eval_batch_size // mesh.size)

  def streamed(params, batch_stats):
    logits, labels, mask = [], [], []
    for batch in grain_loader.make_eval_loader(config, records):
      placed = stream.global_batch({k: batch[k] for k in ("images", "labels", "mask")}, mesh)
      logits.append(gather(predict_fn(params, batch_stats, placed["images"])))
      labels.append(gather(placed["labels"]))
      mask.append(gather(placed["mask"]))
    mask = np.concatenate(mask).astype(bool)
    return np.concatenate(logits)[mask], np.concatenate(labels)[mask]

  return streamed


def evaluator(run: Run):
  """evaluate(state) -> [test metrics per replica]: the sharded test set, or one streamed pass."""
  predict, replicas = predictions(run, "test"), run.config.replicas

  def evaluate(state):
    logits, labels = predict(state.params, state.batch_stats)
    return [metrics_lib.evaluate(report.replica(logits, r, replicas), labels, run.ctx.class_counts)
            for r in range(replicas)]

  return evaluate


def fit(run: Run, workdir: str) -> dict:
  """Trains ``run`` to ``train.epochs`` in the loop (resuming at ``run.start_epoch``), runs the
  method's ``finalize`` per replica and writes the report; returns the summary."""
  config, replicas = run.config, run.config.replicas
  if jax.process_index() == 0:  # the config as run (a re-run may change only safe fields)
    if not run.start_epoch:
      data_lib.save_selection(selection(run), workdir)
    files.write_json_atomic(files.join(workdir, config_lib.CONFIG_FILE),
                            provenance.config_record(config))
  logging.info("%s: model %s, %d parameters; %d steps per epoch; %d device(s), %d replica(s)%s",
               config.dataset.name, config.model.name,
               models.count_params(report.replica(run.state.params, 0, replicas)),
               run.ctx.steps_per_epoch, run.mesh.size, replicas,
               f"; resumed at step {run.in_epoch['steps_done']} of epoch {run.start_epoch + 1}"
               if run.in_epoch else f"; resumed at epoch {run.start_epoch}" if run.start_epoch else "")
  train_epoch = (stream_feed if run.streamed is not None else memory_feed)(run)
  run.state = loop.run_epochs(
      run.state, workdir=workdir, mngr=run.mngr, start=run.start_epoch, end=config.train.epochs,
      train_epoch=train_epoch, evaluate=evaluator(run), eval_every=config.train.eval_every_epochs,
      checkpoint_every=config.train.checkpoint_every_epochs, replicas=replicas, loaders=run.loaders)
  run.start_epoch = config.train.epochs
  states = [report.replica(run.state, r, replicas) for r in range(replicas)]
  if run.method.finalize and jax.process_index() == 0:
    data = run.data
    for state, folder in zip(states, report.replica_dirs(workdir, replicas)):
      run.method.finalize(Trained(run.ctx, state, run.mean, run.std,
                                  None if data is None else data.test.images,
                                  run.streamed.test.labels if data is None else data.test.labels,
                                  run.class_names), folder)
  return report.finish(workdir, replicas=replicas, epochs=config.train.epochs,
                       class_names=run.class_names, class_counts=run.ctx.class_counts,
                       plots=config.train.plots,
                       extra=[{"parameters": models.count_params(s.params)} for s in states])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains the one-phase ``config.method`` (validated) on ``workdir``, resuming from its latest
  checkpoint. Returns the summary (also ``workdir/summary.json``): final- and best-epoch errors,
  shot-group accuracies, per-class recall; with replicas their mean, ``*_std`` and each one's."""
  return fit(setup(config, workdir), workdir)
