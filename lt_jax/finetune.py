"""Phase II on a frozen phase-I network: load (or first train) phase I, fine-tune a classifier head.

The one place shared by FSA (``methods/fsa.py``) and the decoupled classifiers (``methods/
decouple.py``: cRT, tau-normalised, LWS):

* ``load_phase1``: the finished phase-I run of ``GROUP.phase1_workdir`` (its own ``config.json``
  gives model and data), or, when that field is empty, phase I trained first in ``workdir/phase1``
  with ``GROUP.phase1_method`` and the rest of the run's config;
* samplers of training ids on the device (uniform from a pool, class-balanced, within classes);
* ``frozen_maps``: the phase-I network in eval mode (running BatchNorm statistics) up to a stage;
* ``fit_head``: a jitted ``lax.scan`` loop training a small pytree (the head) on batches a method
  builds, evaluating on the test set every ``GROUP.eval_every`` iterations, with orbax checkpoints
  (a killed run resumes) and ``summary.json`` in ``train.summarise``'s format.

A phase-II "epoch" in metrics and summaries is one evaluation round of ``eval_every`` iterations.
Phase II runs on one device; its randomness is a function of (config.seed, step).
"""

import copy
import dataclasses
import functools
import json
import os
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lt_jax import checkpointing
from lt_jax import data as data_lib
from lt_jax import methods
from lt_jax import metric_writer
from lt_jax import metrics as metrics_lib
from lt_jax import models
from lt_jax import parallel
from lt_jax import train
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.models import layers

PHASE1_DIR = "phase1"
PHASE1_FILE = "phase1.json"


@dataclasses.dataclass
class Phase1:
  """A finished phase-I run: its ``train.Run`` (data, model, state, normalisation), dir and config."""
  run: train.Run
  workdir: str
  config: ml_collections.ConfigDict
  summary: dict | None


def merge_saved_config(base: ml_collections.ConfigDict, saved: dict) -> ml_collections.ConfigDict:
  """``base`` with every field of a run's saved ``config.json`` it also has (lists back to tuples).

  Fields added to the code after that run keep ``base``'s values; fields since removed are dropped.
  """
  merged = copy.deepcopy(base)

  def assign(node, values):
    for key, value in values.items():
      if key not in node:
        continue
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        assign(node[key], value)
      elif isinstance(node[key], tuple) and isinstance(value, list):
        node[key] = tuple(value)
      elif isinstance(node[key], float) and isinstance(value, int) and not isinstance(value, bool):
        node[key] = float(value)
      else:
        node[key] = value

  with merged.unlocked():
    assign(merged, saved)
  return merged


def load_phase1(config: ml_collections.ConfigDict, workdir: str, group: str) -> Phase1:
  """The finished phase-I run named by ``config[group].phase1_workdir``; trains it first if empty."""
  cfg = config[group]
  method = methods.get_method(cfg.phase1_method)
  if hasattr(method, "run"):
    raise ValueError(f"{group}.phase1_method={cfg.phase1_method!r} is itself a two-phase method; "
                     "expected a one-phase method such as 'erm', 'mwnet', 'cbmeta' or 'mfm'")
  if cfg.phase1_workdir:
    phase1_workdir = cfg.phase1_workdir
    path = os.path.join(phase1_workdir, "config.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{group}.phase1_workdir={phase1_workdir!r} has no config.json; expected "
                              "the workdir of a finished lt_jax run")
    with open(path) as f:
      phase1_config = merge_saved_config(config, json.load(f))
  else:
    phase1_workdir = os.path.join(workdir, PHASE1_DIR)
    phase1_config = copy.deepcopy(config)
    phase1_config.method = cfg.phase1_method
  if phase1_config.replicas != 1:
    raise ValueError(f"replicas={phase1_config.replicas} in the phase-I config ({phase1_workdir}); "
                     "phase II needs a phase-I run with replicas=1")
  if not cfg.phase1_workdir:
    print(f"{group}: training phase I ({cfg.phase1_method}) in {phase1_workdir}")
    train.train_and_evaluate(phase1_config, phase1_workdir)
  run = train.setup(phase1_config, phase1_workdir)
  if run.start_epoch < phase1_config.train.epochs:
    raise ValueError(f"{group}.phase1_workdir={phase1_workdir!r} holds a run stopped at epoch "
                     f"{run.start_epoch} of {phase1_config.train.epochs}; finish it first (run its "
                     "command again, it resumes)")
  summary_path = os.path.join(phase1_workdir, "summary.json")
  summary = json.load(open(summary_path)) if os.path.exists(summary_path) else None
  return Phase1(run, phase1_workdir, phase1_config, summary)


# --- Samplers (on device) --------------------------------------------------------------------------

def class_members(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(members (C, n_max) int32, padded with each class's first id; counts (C,) int32)."""
  parts = data_lib.longtail.class_indices(np.asarray(labels), num_classes)
  counts = np.array([len(p) for p in parts], np.int32)
  members = np.zeros((num_classes, max(1, counts.max())), np.int32)
  for c, ids in enumerate(parts):
    if len(ids):
      members[c] = np.concatenate([ids, np.full(members.shape[1] - len(ids), ids[0])])
  return members, counts


def ids_in_classes(key, classes: jax.Array, members: jax.Array, counts: jax.Array) -> jax.Array:
  """One uniformly drawn training id of each class in ``classes`` (any shape)."""
  slot = jnp.floor(jax.random.uniform(key, classes.shape) * counts[classes]).astype(jnp.int32)
  return members[classes, jnp.minimum(slot, counts[classes] - 1)]


def ids_from_pool(key, pool: jax.Array, num: int) -> jax.Array:
  """``num`` ids drawn uniformly with replacement from ``pool``."""
  return pool[jax.random.randint(key, (num,), 0, pool.shape[0])]


def class_balanced_ids(key, present: jax.Array, members, counts, num: int) -> jax.Array:
  """``num`` ids: a class uniform over the ``present`` classes, then a sample uniform within it."""
  class_key, id_key = jax.random.split(key)
  return ids_in_classes(id_key, ids_from_pool(class_key, present, num), members, counts)


# --- The frozen network ----------------------------------------------------------------------------

def frozen_maps(model, params, batch_stats, images, stage: int | None = None):
  """Eval-mode pre-pooling map of the last stage (``stage=None``) or the map after ``stage``."""
  variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
  if stage is None:
    return model.apply(variables, images, train=False, return_features=True)[1]
  return model.apply(variables, images, train=False, to_stage=stage)


def frozen_maps_from(model, params, batch_stats, maps, stage: int):
  """Eval-mode last-stage map computed from the map after ``stage``."""
  variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
  return model.apply(variables, maps, train=False, from_stage=stage, return_features=True)[1]


def classifier_module(config, num_classes: int) -> layers.Classifier:
  return layers.Classifier(num_classes, config.model.classifier)


def classifier_logits(config, num_classes, classifier_params, pooled):
  """The model's classifier on pooled features (N, D)."""
  return classifier_module(config, num_classes).apply({"params": classifier_params}, pooled)


def augmented_images(key, images_uint8, ids, phase1: Phase1, enabled: bool):
  """Normalised images of ``ids``, with the phase-I run's crop / flip when ``enabled``."""
  run, images = phase1.run, images_uint8[ids]
  if enabled:
    return augment.train_transform(key, images, phase1.config.augment, run.mean, run.std)
  return augment.eval_transform(images, run.mean, run.std)


# --- Fitting a head --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Head:
  """What a phase-II method trains.

  init: the head pytree (classifier parameters, LWS scales, ...).
  batch: (key, head) -> (pooled features (B, D), labels (B,), extra metrics dict); no gradient flows
    through it (the backbone is frozen).
  logits: (head, pooled) -> logits.
  fold: (head, phase-I params) -> params of a plain network that predicts with the head.
  """
  init: Any
  batch: Callable
  logits: Callable
  fold: Callable


def phase2_key(seed: int, salt: int) -> jax.Array:
  """The base key of a phase-II run: ``rbg`` bits (XLA's RngBitGenerator), which compile in a
  fraction of threefry's time; deterministic for a seed on a given backend."""
  return jax.random.fold_in(jax.random.key(seed, impl="rbg"), salt)


def head_optimizer(cfg) -> optax.GradientTransformation:
  """SGD (momentum, weight decay added to the gradient like PyTorch) at a constant or cosine lr."""
  lr = cfg.lr if cfg.schedule == "constant" else optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1))
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(lr, momentum=cfg.momentum or None))


def _train_chunk(state: ts.TrainState, *, head: Head, tx, length: int):
  """``length`` SGD steps of the head on cross-entropy; returns (state, mean metrics)."""

  def step(state, _):
    pooled, labels, extra = head.batch(ts.step_key(state), state.meta["head"])
    pooled, labels = jax.lax.stop_gradient((pooled, labels))

    def loss_fn(h):
      logits = head.logits(h, pooled)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.meta["head"])
    updates, opt_state = tx.update(grads, state.opt_state, state.meta["head"])
    new_head = optax.apply_updates(state.meta["head"], updates)
    state = state.replace(step=state.step + 1, opt_state=opt_state, meta={"head": new_head})
    return state, {**ts.classification_metrics(logits, labels, loss), **extra}

  state, metrics = jax.lax.scan(step, state, None, length=length)
  return state, jax.tree.map(jnp.mean, metrics)


def start(config, workdir: str, phase1: Phase1) -> None:
  """Writes the phase-II run's config, data selection and phase-I pointer (first start only)."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    train.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    data_lib.save_selection(phase1.run.data, workdir)
    train.write_json_atomic(os.path.join(workdir, PHASE1_FILE),
                            {"workdir": os.path.abspath(phase1.workdir), "summary": phase1.summary})


def fit_head(config, workdir: str, phase1: Phase1, head: Head, cfg, *, seed_salt: int) -> dict:
  """Trains ``head`` for ``cfg.steps`` iterations (``cfg.steps = 0``: evaluates it as it is).

  Evaluates every ``cfg.eval_every`` iterations, checkpoints the state (``params`` = the folded
  plain network, ``meta['head']`` = the head), resumes from the latest checkpoint, and returns
  the summary written to ``workdir/summary.json``.
  """
  run = phase1.run
  start(config, workdir, phase1)
  tx = head_optimizer(cfg)
  rounds = cfg.steps // cfg.eval_every if cfg.steps else 1
  length = cfg.eval_every if cfg.steps else 0
  state = ts.TrainState(step=jnp.zeros((), jnp.int32), params=head.fold(head.init, run.state.params),
                        batch_stats=run.state.batch_stats, opt_state=tx.init(head.init),
                        meta={"head": head.init},
                        rng=phase2_key(config.seed, seed_salt))
  state = parallel.replicate(state, run.mesh)  # the shardings of the loaded arrays: one compile
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints)
  state, done_rounds = checkpointing.restore_latest(mngr, state)
  chunk_fn = jax.jit(functools.partial(_train_chunk, head=head, tx=tx, length=length))
  test_images, test_labels = jax.device_put(run.data.test.images), run.data.test.labels
  predict_fn = jax.jit(functools.partial(train.predict, model=run.ctx.model, mean=run.mean, std=run.std,
                                         batch_size=min(config.train.eval_batch_size, len(test_labels))))
  writer = metric_writer.MetricWriter(workdir)
  for round_ in range(done_rounds + 1, rounds + 1):
    if length:
      state, train_metrics = chunk_fn(state)
      train_metrics = {k: float(v) for k, v in jax.device_get(train_metrics).items()}
      if not np.isfinite(train_metrics["loss"]):
        raise train.NonFiniteLossError(f"phase-II loss is {train_metrics['loss']} in round {round_}; "
                                       "lower the learning rate")
      writer.write("train", round_, int(state.step), train_metrics)
    state = state.replace(params=head.fold(state.meta["head"], run.state.params))
    result = metrics_lib.evaluate(np.asarray(predict_fn(state.params, state.batch_stats, test_images)),
                                  test_labels, run.ctx.class_counts)
    writer.write("eval", round_, int(state.step), result)
    logging.info("phase II round %d/%d: step %d, top-1 error %.2f%%", round_, rounds, int(state.step),
                 result["top1_error"])
    checkpointing.save(mngr, state, round_)
  writer.close()
  return finish(workdir, phase1, state, rounds)


def finish(workdir: str, phase1: Phase1, state: ts.TrainState, rounds: int) -> dict:
  """``summary.json`` (``train.summarise`` plus the phase-I figures) and the printed report."""
  run = phase1.run
  summary = train.summarise(metric_writer.read_records(workdir, "eval", max_epoch=rounds))
  summary["parameters"] = models.count_params(state.params)
  summary["phase1_workdir"] = os.path.abspath(phase1.workdir)
  if phase1.summary:
    summary["phase1_final_top1_error"] = phase1.summary.get("final_top1_error")
  if jax.process_index() == 0:
    train.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    print(train.format_summary(summary, run.data.class_names, run.ctx.class_counts))
    if phase1.summary:
      print(f"phase I ({phase1.workdir}): final top-1 error {phase1.summary['final_top1_error']:.2f}%")
  return summary

