"""train_and_evaluate(config, workdir): the training loop shared by every method.

The long-tailed uint8 images live on the device; one jitted call runs a whole epoch under
``lax.scan`` (batch sampling, pad-crop-flip, normalisation and the method's step all on device),
so the host only logs, evaluates and checkpoints between epochs. Randomness is a function of
(seed, step), so a run resumed from a checkpoint equals an uninterrupted one.
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
from lt_jax import plots
from lt_jax import train_state as ts
from lt_jax.data import augment


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


def build_context(config, data) -> ts.Context:
  """The model, optimiser and schedule of a run on ``data``."""
  num_train = len(data.train.labels)
  if config.train.batch_size > num_train:
    raise ValueError(f"train.batch_size={config.train.batch_size} is larger than the "
                     f"{num_train} training images")
  steps_per_epoch = math.ceil(num_train / config.train.batch_size)
  lr_fn = optim.learning_rate_schedule(config.optim, steps_per_epoch)
  return ts.Context(
      config=config,
      model=models.get_model(config.model, data.num_classes),
      tx=optim.make_optimizer(config.optim, lr_fn),
      lr_fn=lr_fn,
      class_counts=data.counts("train"),
      steps_per_epoch=steps_per_epoch,
      num_train=num_train,
  )


def init_state(config, ctx: ts.Context, method, input_shape) -> ts.TrainState:
  """Fresh state from ``config.seed``: network variables, optimiser state, method's meta state."""
  rng = jax.random.key(config.seed)
  init_rng, meta_rng, train_rng = jax.random.split(rng, 3)
  variables = models.init_variables(ctx.model, init_rng, (1, *input_shape))
  params = variables["params"]
  return ts.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=ctx.tx.init(params),
      meta=method.init_meta(meta_rng, variables, ctx),
      rng=train_rng,
  )


def meta_batch_size(config, data) -> int:
  """The meta batch size, capped at the meta set's size (the whole CIFAR-10 meta set is 100)."""
  return min(config.meta.batch_size, len(data.meta.labels))


def run_epoch(state: ts.TrainState, arrays: dict, *, phase, ctx: ts.Context, method, mean, std,
              meta_batch: int):
  """One epoch of ``steps_per_epoch`` steps under ``lax.scan``; returns (state, mean metrics).

  Each epoch visits a fresh permutation of the training set in batches of B; the last batch wraps
  around to the permutation's start so every batch has the same shape.
  """
  config = ctx.config
  batch_size, num_train = config.train.batch_size, ctx.num_train
  epoch = ts.epoch_of(state, ctx)
  order = jax.random.permutation(ts.epoch_key(state, epoch), num_train)

  def step(state, index_in_epoch):
    positions = (index_in_epoch * batch_size + jnp.arange(batch_size)) % num_train
    ids = order[positions]
    aug_key, meta_key, meta_aug_key = jax.random.split(ts.step_key(state, salt=1), 3)
    batch = {
        "images": augment.train_transform(aug_key, arrays["train_images"][ids], config.augment, mean, std),
        "labels": arrays["train_labels"][ids],
        "ids": ids,
    }
    if meta_batch:
      meta_ids = jax.random.permutation(meta_key, arrays["meta_labels"].shape[0])[:meta_batch]
      batch["meta_images"] = augment.train_transform(
          meta_aug_key, arrays["meta_images"][meta_ids], config.augment, mean, std)
      batch["meta_labels"] = arrays["meta_labels"][meta_ids]
    lr = ctx.lr_fn(state.step)
    state, metrics = method.train_step(state, batch, ctx, phase)
    return state, {**metrics, "lr": lr}

  state, metrics = jax.lax.scan(step, state, jnp.arange(ctx.steps_per_epoch))
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


def device_arrays(data, meta_batch: int) -> dict:
  """The uint8 training (and meta) arrays placed on the device once."""
  arrays = {"train_images": data.train.images, "train_labels": data.train.labels}
  if meta_batch:
    arrays.update(meta_images=data.meta.images, meta_labels=data.meta.labels)
  return jax.device_put(arrays)


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


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config, loads the data, builds model and optimiser, restores the latest state.

  Also how later phases load a finished run (FSA phase II starts from a phase-I workdir).
  """
  config_lib.validate(config)
  method = methods.get_method(config.method)
  os.makedirs(workdir, exist_ok=True)
  data = data_lib.load(config)
  if method.needs_meta_data(config) and not len(data.meta.labels):
    raise ValueError(f"config.method={config.method!r} needs balanced meta data: set meta.strategy "
                     "to 'meta' or 'development' (it is 'none')")
  ctx = build_context(config, data)
  mean, std = normalisation_stats(config, data)
  meta_batch = meta_batch_size(config, data) if method.needs_meta_data(config) else 0
  state = init_state(config, ctx, method, data.train.images.shape[1:])
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints)
  state, start_epoch = checkpointing.restore_latest(mngr, state)
  return Run(data, ctx, method, state, mngr, start_epoch, mean, std, meta_batch)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config.method`` on the long-tailed data, evaluating and checkpointing per epoch.

  Re-running on the same workdir resumes from the latest checkpoint. Returns the summary (also in
  ``workdir/summary.json``): final- and best-epoch errors, shot-group accuracies, per-class recall.
  """
  run = setup(config, workdir)
  data, ctx, method, state, mngr, start_epoch = (run.data, run.ctx, run.method, run.state, run.mngr,
                                                 run.start_epoch)
  mean, std, meta_batch = run.mean, run.std, run.meta_batch
  if jax.process_index() == 0 and not start_epoch:
    data_lib.save_selection(data, workdir)
    write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  logging.info("model %s: %d parameters", config.model.name, models.count_params(state.params))
  if start_epoch:
    logging.info("resumed from the checkpoint of epoch %d in %s", start_epoch, workdir)

  arrays = device_arrays(data, meta_batch)
  test_images, test_labels = jax.device_put(data.test.images), data.test.labels
  epoch_fn = jax.jit(
      functools.partial(run_epoch, ctx=ctx, method=method, mean=mean, std=std, meta_batch=meta_batch),
      static_argnames="phase", donate_argnums=0)
  predict_fn = jax.jit(functools.partial(predict, model=ctx.model, mean=mean, std=std,
                                         batch_size=min(config.train.eval_batch_size, len(test_labels))))

  writer = metric_writer.MetricWriter(workdir)
  epochs = config.train.epochs
  bar = tqdm.tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, unit="epoch",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  for epoch in bar:
    started = time.time()
    state, train_metrics = epoch_fn(state, arrays, phase=method.phase(epoch, ctx))
    train_metrics = {k: float(v) for k, v in jax.device_get(train_metrics).items()}
    done = epoch + 1
    if not math.isfinite(train_metrics["loss"]):
      last = mngr.latest_step()
      raise NonFiniteLossError(
          f"training loss is {train_metrics['loss']} in epoch {done}; stopped. The last good "
          f"checkpoint (epoch {last}) is kept in {workdir}/checkpoints; lower optim.lr or check the data.")
    train_metrics["epoch_seconds"] = time.time() - started
    train_metrics["compiles"] = epoch_fn._cache_size()  # one per phase; more means a retrace
    writer.write("train", done, int(state.step), train_metrics)
    postfix = {"loss": f"{train_metrics['loss']:.3f}"}
    if done % config.train.eval_every_epochs == 0 or done == epochs:
      logits = np.asarray(predict_fn(state.params, state.batch_stats, test_images))
      result = metrics_lib.evaluate(logits, test_labels, ctx.class_counts)
      writer.write("eval", done, int(state.step), result)
      postfix["err"] = f"{result['top1_error']:.2f}"
    bar.set_postfix(postfix)
    if done % config.train.checkpoint_every_epochs == 0 or done == epochs:
      checkpointing.save(mngr, state, done)
  writer.close()
  if hasattr(method, "finalize") and jax.process_index() == 0:
    run.state = state
    method.finalize(run, workdir)

  eval_records = metric_writer.read_records(workdir, "eval", max_epoch=epochs)
  summary = summarise(eval_records)
  summary["parameters"] = models.count_params(state.params)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    if config.train.plots:
      plots.write_all(workdir, data.class_names, ctx.class_counts, eval_records[-1],
                      metric_writer.read_records(workdir, "train", max_epoch=epochs), eval_records)
    print(format_summary(summary, data.class_names, ctx.class_counts))
  return summary


def format_summary(summary: dict, class_names, train_counts) -> str:
  """Human-readable end-of-run report: errors, shot groups, per-class recall."""
  lines = [
      f"top-1 error: final {summary['final_top1_error']:.2f}% (epoch {summary['final_epoch']}), "
      f"best {summary['best_top1_error']:.2f}% (epoch {summary['best_epoch']})",
      "shot groups (final): " + ", ".join(
          f"{g} {summary[f'final_{g}_accuracy']:.1f}%" for g in ("many", "medium", "few")
          if summary[f"final_{g}_accuracy"] is not None),
      "per-class recall (final):",
  ]
  for name, count, recall in zip(class_names, train_counts, summary["final_per_class_recall"]):
    lines.append(f"  {name:>12s}  n={int(count):5d}  " + ("-" if recall is None else f"{100 * recall:5.1f}%"))
  return "\n".join(lines)
