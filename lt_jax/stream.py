"""train_and_evaluate_streaming(config, workdir): full-size training from the grain loaders.

``train.train_and_evaluate`` dispatches here when ``config.loader.stream`` is true. The uint8
training set stays on disk: each host's ``large_scale.TrainLoader`` decodes, random-resized-crops
and flips its B/P images per step; the global batch is assembled from the hosts' local batches
(``jax.make_array_from_process_local_data``, sharded over the ``data`` mesh axis) and one jitted,
shard_map'ed step normalises it on the device and calls the method's ``train_step``. JAX dispatch
is asynchronous, so the host decodes batch t + 1 while the device runs step t.

Everything else is the in-memory loop's: ``train.build_context`` / ``init_replicas`` (pretrained
init included), ``method.phase(epoch)``, per-epoch metrics in ``metrics.jsonl``, evaluation every
``train.eval_every_epochs`` epochs (on ``make_eval_loader`` batches, padding dropped by ``mask``),
orbax checkpoints, ``summary.json``. The loaders' positions are saved next to each checkpoint
(``workdir/loader_state/process{i}_{train,meta}_epoch{e}.bin``, one per host) and restored with it,
so a resumed run sees the same batches as an uninterrupted one.

Not streamed (clear errors): ``replicas > 1``, class-aware ``dataset.sampler``s, methods with extra
batches (BBN) or their own phase-II loop (FSA, decoupled classifiers). MFM's t-SNE plots need the
test images in memory and are skipped; its modulator is saved.
"""

import dataclasses
import functools
import os
import re
import time
import types

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
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
from lt_jax import parallel
from lt_jax import plots
from lt_jax import train
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.data import large_scale
from lt_jax.data import longtail
from lt_jax.data import split_lists

LOADER_DIR = "loader_state"
SELECTION_FILE = "data_selection.json"


# --- configuration and data ------------------------------------------------------------------------

def validate_streaming(config: ml_collections.ConfigDict, method) -> None:
  """ValueError naming the field when ``loader.stream=True`` cannot run ``config``."""
  source = config.dataset.source
  if source not in split_lists.SOURCES:
    raise ValueError(f"loader.stream=True needs a streaming dataset.source (one of "
                     f"{list(split_lists.SOURCES)}); got dataset.source={source!r}. Set "
                     "loader.stream=False to load it in memory")
  if config.replicas != 1:
    raise ValueError(f"replicas={config.replicas}: loader.stream=True trains one model "
                     "(replicas=1); run the seeds as separate jobs")
  if config.dataset.sampler != "instance":
    raise ValueError(f"dataset.sampler={config.dataset.sampler!r} is not streamed: the grain "
                     "loader draws instance-balanced batches; use dataset.sampler='instance' or "
                     "loader.stream=False")
  if hasattr(method, "run"):
    raise ValueError(f"config.method={config.method!r} runs its own phase-II loop on in-memory "
                     "images and does not stream; set loader.stream=False")
  if hasattr(method, "extra_batches") and method.extra_batches(config):
    raise ValueError(f"config.method={config.method!r} needs extra batches from other samplers, "
                     "which the streaming loader does not draw; set loader.stream=False")
  if not (len(config.augment.mean) and len(config.augment.std)):
    raise ValueError("loader.stream=True needs augment.mean and augment.std (3 values each, e.g. "
                     "the ImageNet constants): channel statistics cannot come from a stream")
  if len(config.augment.mean) != 3 or len(config.augment.std) != 3:
    raise ValueError(f"augment.mean / augment.std need 3 values (RGB); got "
                     f"{len(config.augment.mean)} and {len(config.augment.std)}")


def load_splits(dataset) -> split_lists.SplitLists:
  """The split lists of ``config.dataset``, writing the miniature first for ``:smoke`` configs."""
  if dataset.get("miniature") and not os.path.exists(dataset.path):
    from lt_jax.data import miniature  # pylint: disable=g-import-not-at-top
    miniature.write(dataset.miniature, dataset.path)
  return large_scale.load_split_lists(dataset)


def meta_records(config, splits: split_lists.SplitLists):
  """(split name, positions, ImageRecords) of the meta set (``meta.strategy``, ``meta.per_class``)."""
  split, idx = split_lists.select_meta(
      splits.train.labels, None if splits.val is None else splits.val.labels, splits.num_classes,
      strategy=config.meta.strategy, per_class=config.meta.per_class, seed=config.dataset.seed)
  if not split:
    return split, idx, None
  return split, idx, getattr(splits, split).subset(idx, "meta")


def test_split(config, splits: split_lists.SplitLists):
  """The test list, or MFM's imbalanced subset of it (``dataset.test``, as the in-memory path)."""
  idx = longtail.select_test(splits.test.labels, splits.num_classes, test=config.dataset.test,
                             test_imbalance=config.dataset.test_imbalance, seed=config.dataset.seed)
  return splits.test if len(idx) == len(splits.test) else splits.test.subset(idx, "test")


def data_view(splits: split_lists.SplitLists, meta=None):
  """The few fields of ``LongTailData`` that ``train.build_context`` / ``meta_batch_size`` read."""
  counts = split_lists.class_counts(splits.train.labels, splits.num_classes)
  return types.SimpleNamespace(
      train=types.SimpleNamespace(labels=splits.train.labels),
      meta=types.SimpleNamespace(labels=np.zeros((0,), np.int32) if meta is None else meta.labels),
      num_classes=splits.num_classes, class_names=splits.class_names,
      counts=lambda split: counts if split == "train" else None)


def selection_record(config, splits, meta_split: str, meta_idx: np.ndarray) -> dict:
  """What ``data_selection.json`` holds for a streamed run: per-class counts and the meta positions."""
  count = lambda records: (None if records is None else
                           split_lists.class_counts(records.labels, splits.num_classes).tolist())
  return {"dataset": config.dataset.name, "source": config.dataset.source,
          "num_classes": splits.num_classes, "class_names": list(splits.class_names),
          "counts": {s: count(getattr(splits, s)) for s in split_lists.SPLITS},
          "meta": {"split": meta_split, "indices": np.asarray(meta_idx).tolist()}}


# --- device programs -------------------------------------------------------------------------------

def normalised(batch: dict, mean, std) -> dict:
  """``batch`` with its uint8 ``images`` (and ``meta_images``) normalised to float32."""
  out = dict(batch)
  for key in ("images", "meta_images"):
    if key in out:
      out[key] = augment.normalize(out[key], mean, std)
  return out


def make_step_fn(ctx: ts.Context, method, mesh, mean, std):
  """jit(shard_map): (state, global uint8 batch, phase) -> (state, metrics); state donated.

  The batch comes in sharded over the ``data`` axis, so each device already holds its slice (no
  ``parallel.local_batch``); the state and the metrics (device means) are replicated.
  """
  ctx = dataclasses.replace(ctx, axis_name=parallel.AXIS)

  def local_step(state, batch, phase):
    lr = ctx.lr_fn(state.step)
    state, metrics = method.train_step(state, normalised(batch, mean, std), ctx, phase)
    return state, ts.device_mean({**metrics, "lr": lr}, ctx)

  def step(state, batch, phase):
    replicated, sharded = PartitionSpec(), PartitionSpec(parallel.AXIS)
    fn = jax.shard_map(functools.partial(local_step, phase=phase), mesh=mesh,
                       in_specs=(replicated, sharded), out_specs=replicated, check_vma=False)
    return fn(state, batch)

  return jax.jit(step, static_argnames="phase", donate_argnums=0)


@functools.partial(jax.jit, donate_argnums=0)
def accumulate(totals, metrics):
  """Running sums of the step metrics, kept on the device until the end of the epoch."""
  return jax.tree.map(jnp.add, totals, metrics)


def global_batch(local: dict, mesh) -> dict:
  """Each host's numpy batch -> global arrays split over the ``data`` axis (ids as int32)."""
  sharding = NamedSharding(mesh, PartitionSpec(parallel.AXIS))
  cast = {"ids": np.int32, "labels": np.int32, "meta_ids": np.int32, "meta_labels": np.int32}
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v, cast.get(k, v.dtype)))
          for k, v in local.items()}


def next_batch(train_loader, meta_loader) -> dict:
  """The next host-local batch; with a meta loader also ``meta_images`` and ``meta_labels``."""
  batch = next(train_loader)
  batch = {"images": batch["images"], "labels": batch["labels"], "ids": batch["ids"]}
  if meta_loader is not None:
    meta = next(meta_loader)
    batch.update(meta_images=meta["images"], meta_labels=meta["labels"])
  return batch


def evaluate_stream(config, state, predict_fn, mesh, records, class_counts) -> dict:
  """``metrics.evaluate`` on one pass of the eval loader over ``records`` (all hosts' rows)."""
  logits, labels, mask = [], [], []
  for batch in large_scale.make_eval_loader(config, records):
    placed = global_batch({"images": batch["images"], "labels": batch["labels"],
                           "mask": batch["mask"]}, mesh)
    out = predict_fn(state.params, state.batch_stats, placed["images"])
    logits.append(multihost_utils.process_allgather(out, tiled=True))
    labels.append(multihost_utils.process_allgather(placed["labels"], tiled=True))
    mask.append(multihost_utils.process_allgather(placed["mask"], tiled=True))
  mask = np.concatenate(mask).astype(bool)
  return metrics_lib.evaluate(np.concatenate(logits)[mask], np.concatenate(labels)[mask],
                              class_counts)


# --- loader state next to the checkpoints ----------------------------------------------------------

def loader_state_path(workdir: str, name: str, epoch: int, process: int | None = None) -> str:
  """``workdir/loader_state/process{i}_{name}_epoch{e}.bin``."""
  process = jax.process_index() if process is None else process
  return os.path.join(workdir, LOADER_DIR, f"process{process}_{name}_epoch{epoch}.bin")


def save_loader_states(workdir: str, loaders: dict, epoch: int) -> None:
  """Each loader's ``get_state()`` bytes, written atomically (this host's files only)."""
  os.makedirs(os.path.join(workdir, LOADER_DIR), exist_ok=True)
  for name, loader in loaders.items():
    path = loader_state_path(workdir, name, epoch)
    state = loader.get_state()
    with open(f"{path}.tmp", "wb") as f:
      f.write(state if isinstance(state, bytes) else str(state).encode())
    os.replace(f"{path}.tmp", path)


def restore_loader_states(workdir: str, loaders: dict, epoch: int) -> None:
  """``set_state`` of every loader from the files of ``epoch``; FileNotFoundError when absent."""
  for name, loader in loaders.items():
    path = loader_state_path(workdir, name, epoch)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"{path} is missing: the checkpoint of epoch {epoch} in {workdir}/checkpoints has no "
          f"{name} loader state for process {jax.process_index()} (was it written by "
          "loader.stream=False or with another host count?); remove the checkpoints to restart")
    with open(path, "rb") as f:
      loader.set_state(f.read())


def prune_loader_states(workdir: str, keep_epochs) -> None:
  """Deletes this host's loader states of epochs whose checkpoint orbax has dropped."""
  folder = os.path.join(workdir, LOADER_DIR)
  pattern = re.compile(rf"process{jax.process_index()}_\w+?_epoch(\d+)\.bin$")
  for name in os.listdir(folder):
    match = pattern.match(name)
    if match and int(match.group(1)) not in set(keep_epochs):
      os.remove(os.path.join(folder, name))


# --- the loop --------------------------------------------------------------------------------------

def finalize(method, ctx, state, mean, std, workdir: str) -> None:
  """The method's end-of-run hook on a Run-like view; hooks needing in-memory test images
  (MFM's t-SNE plots) are switched off."""
  if not hasattr(method, "finalize") or jax.process_index() != 0:
    return
  config = ctx.config
  if "mfm" in config and config.mfm.tsne_samples:
    config = ml_collections.ConfigDict(config.to_dict())
    config.mfm.tsne_samples = 0
    logging.info("mfm.tsne_samples: the t-SNE plots need in-memory test images; skipped when streaming")
  run = types.SimpleNamespace(ctx=dataclasses.replace(ctx, config=config), state=state, data=None,
                              mean=mean, std=std)
  method.finalize(run, workdir)


def train_and_evaluate_streaming(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """``train.train_and_evaluate`` with batches streamed from disk (``loader.stream=True``).

  Re-running on the same workdir resumes from the latest checkpoint and the loader positions saved
  with it. Returns the summary (also in ``workdir/summary.json``).
  """
  config_lib.validate(config)
  data_lib.check_config(config)
  method = methods.get_method(config.method)
  validate_streaming(config, method)
  os.makedirs(workdir, exist_ok=True)
  splits = load_splits(config.dataset)
  test = test_split(config, splits)
  needs_meta = method.needs_meta_data(config)
  meta_split, meta_idx, meta = meta_records(config, splits) if needs_meta else ("", [], None)
  if needs_meta and meta is None:
    raise ValueError(f"config.method={config.method!r} needs balanced meta data: set meta.strategy "
                     "to 'meta' or 'development' (it is 'none')")
  view = data_view(splits, meta)
  ctx = train.build_context(config, view)
  mesh = parallel.data_mesh()
  parallel.per_device(config.train.batch_size, mesh.size, "train.batch_size")
  parallel.per_device(config.train.eval_batch_size, mesh.size, "train.eval_batch_size")
  mean = np.asarray(config.augment.mean, np.float32)
  std = np.asarray(config.augment.std, np.float32)
  size = config.dataset.image_size or 224

  loaders = {"train": large_scale.make_train_loader(config, splits.train)}
  if needs_meta:
    meta_batch = train.meta_batch_size(config, view, mesh.size)
    loaders["meta"] = large_scale.make_train_loader(config, meta, seed_offset=1,
                                                    batch_size=meta_batch)

  state = parallel.replicate(train.init_replicas(config, ctx, method, (size, size, 3)), mesh)
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints)
  state, start_epoch = checkpointing.restore_latest(mngr, state)
  if start_epoch:
    restore_loader_states(workdir, loaders, start_epoch)
    logging.info("resumed from the checkpoint and loader state of epoch %d in %s", start_epoch,
                 workdir)
  elif jax.process_index() == 0:
    train.write_json_atomic(os.path.join(workdir, SELECTION_FILE),
                            selection_record(config, splits, meta_split, meta_idx))
    train.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  logging.info("streaming %s: %d training images, %d steps per epoch; model %s: %d parameters; "
               "%d device(s), %d host(s)", config.dataset.name, len(splits.train),
               ctx.steps_per_epoch, config.model.name, models.count_params(state.params),
               mesh.size, jax.process_count())

  step_fn = make_step_fn(ctx, method, mesh, mean, std)
  predict_fn = train.make_predict_fn(
      types.SimpleNamespace(ctx=ctx, mean=mean, std=std), mesh, config.train.eval_batch_size)
  writer = metric_writer.MetricWriter(workdir)
  epochs = config.train.epochs
  bar = tqdm.tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, unit="epoch",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  for epoch in bar:
    started = time.time()
    phase = method.phase(epoch, ctx)
    totals = None
    local = next_batch(loaders["train"], loaders.get("meta"))
    for index in range(ctx.steps_per_epoch):
      state, metrics = step_fn(state, global_batch(local, mesh), phase)
      totals = metrics if totals is None else accumulate(totals, metrics)
      if index + 1 < ctx.steps_per_epoch:  # decoded while the device runs the step just issued
        local = next_batch(loaders["train"], loaders.get("meta"))
    train_metrics = {k: float(v) / ctx.steps_per_epoch for k, v in jax.device_get(totals).items()}
    done = epoch + 1
    if not np.isfinite(train_metrics["loss"]):
      raise train.NonFiniteLossError(
          f"training loss is {train_metrics['loss']} in epoch {done}; stopped. The last good "
          f"checkpoint (epoch {mngr.latest_step()}) is kept in {workdir}/checkpoints; lower "
          "optim.lr or check the data.")
    seconds = time.time() - started
    step = int(state.step)
    train_metrics.update(epoch_seconds=seconds, compiles=step_fn._cache_size(),
                         images_per_second=ctx.steps_per_epoch * config.train.batch_size / seconds)
    writer.write("train", done, step, train_metrics)
    postfix = {"loss": f"{train_metrics['loss']:.3f}"}
    if done % config.train.eval_every_epochs == 0 or done == epochs:
      result = evaluate_stream(config, state, predict_fn, mesh, test, ctx.class_counts)
      writer.write("eval", done, step, result)
      postfix["err"] = f"{result['top1_error']:.2f}"
    bar.set_postfix(postfix)
    if done % config.train.checkpoint_every_epochs == 0 or done == epochs:
      save_loader_states(workdir, loaders, done)  # before the checkpoint that points at them
      checkpointing.save(mngr, state, done)
      prune_loader_states(workdir, mngr.all_steps())
  writer.close()
  finalize(method, ctx, state, mean, std, workdir)

  eval_records = metric_writer.read_records(workdir, "eval", max_epoch=epochs)
  summary = train.summarise(eval_records)
  summary["parameters"] = models.count_params(state.params)
  if jax.process_index() == 0:
    if config.train.plots:
      plots.write_all(workdir, splits.class_names, ctx.class_counts, eval_records[-1],
                      metric_writer.read_records(workdir, "train", max_epoch=epochs), eval_records)
    train.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    print(train.format_summary(summary, splits.class_names, ctx.class_counts))
  return summary
