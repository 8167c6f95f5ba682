"""Two-phase methods (FSA, the decoupled classifiers): phase I loaded or trained once, phase II fitted
in the one loop.

Phase I is the finished run of ``GROUP.phase1_workdir`` (its own ``config.json`` gives model and
data) or, when that field is empty, ``GROUP.phase1_method`` trained first in ``workdir/phase1``
with the rest of the run's config; either way its data is loaded once. The method turns the
frozen network into a ``Head`` (``methods.heads``); ``loop.run_epochs`` trains it for
``GROUP.steps`` iterations in rounds of ``GROUP.eval_every`` (a phase-II "epoch" in metrics and
summaries is one round), evaluating and checkpointing each round. The checkpoint's ``params`` is
the folded plain network, so a phase-II workdir is an ordinary classifier run. Phase II's randomness
is a function of (config.seed, step), so a run stopped between rounds resumes equal.

Feeds (``loader.stream`` of the phase-II config; a phase I loaded from ``phase1_workdir`` is read
through it whichever feed trained it): in memory, the uint8 training images live on the device and
one jitted ``lax.scan`` runs a round (``programs.head_steps``); streamed, the ids of a round are
drawn on the device first (``programs.head_ids``), the host decodes exactly those images
(``grain_loader.IdDecoder``) while the device runs the previous step (``programs.head_step``, the
same step), and evaluation is the streamed test pass (``train.evaluator``).
"""

import copy
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import data as data_lib
from lt_jax import files
from lt_jax import loop
from lt_jax import methods
from lt_jax import models
from lt_jax import optim
from lt_jax import parallel
from lt_jax import programs
from lt_jax import provenance
from lt_jax import report
from lt_jax import train
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.data import grain_loader
from lt_jax.methods import heads

PHASE1_DIR = "phase1"
PHASE1_FILE = "phase1.json"


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


def phase1_config(config: ml_collections.ConfigDict, workdir: str, group: str):
  """(phase-I config, its workdir, whether this run trains it)."""
  cfg = config[group]
  if cfg.phase1_workdir:
    saved = files.read_json(files.join(cfg.phase1_workdir, config_lib.CONFIG_FILE),
                            f"{group}.phase1_workdir to be the workdir of a finished lt_jax run")
    p1_config = merge_saved_config(config, saved)
    with p1_config.unlocked():  # phase II's feed reads the images, whichever feed trained phase I
      p1_config.loader = copy.deepcopy(config.loader)
    if config.loader.stream:
      config_lib.validate_streaming(p1_config, methods.get_method(p1_config.method))
    if methods.get_method(p1_config.method).two_phase:
      raise ValueError(f"{group}.phase1_workdir={cfg.phase1_workdir!r} holds a two-phase run "
                       f"({p1_config.method!r}); expected a one-phase run such as erm or cbmeta")
    if p1_config.replicas != 1:
      raise ValueError(f"replicas={p1_config.replicas} in {cfg.phase1_workdir}: phase II needs a "
                       "phase-I run with replicas=1")
    return p1_config, cfg.phase1_workdir, False
  p1_config = copy.deepcopy(config)
  p1_config.method = cfg.phase1_method
  return p1_config, files.join(workdir, PHASE1_DIR), True


def load_phase1(config, workdir: str, group: str):
  """(FrozenNet, its Run, its summary or None): the finished phase-I run, trained first if needed."""
  p1_config, p1_workdir, trains = phase1_config(config, workdir, group)
  run = train.setup(p1_config, p1_workdir, read_only=not trains)  # a given one is only read
  if run.start_epoch < p1_config.train.epochs:
    if not trains:
      raise ValueError(f"{group}.phase1_workdir={p1_workdir!r} holds a run stopped at epoch "
                       f"{run.start_epoch} of {p1_config.train.epochs}; finish it first (run its "
                       "command again, it resumes)")
    print(f"{group}: training phase I ({p1_config.method}) in {p1_workdir}")
    train.fit(run, p1_workdir)
  summary_path = files.join(p1_workdir, report.SUMMARY_FILE)
  summary = files.read_json(summary_path, "a summary") if files.exists(summary_path) else None
  return frozen_net(run, p1_workdir), run, summary


def frozen_net(run: train.Run, workdir: str) -> heads.FrozenNet:
  """The network of a (finished) phase-I run, frozen for phase II."""
  train_logits = functools.partial(train.predictions(run, "train"), run.state.params,
                                   run.state.batch_stats)
  return heads.FrozenNet(config=run.config, workdir=workdir, model=run.ctx.model,
                         params=run.state.params, batch_stats=run.state.batch_stats, mean=run.mean,
                         std=run.std, train_labels=run.ctx.train_labels,
                         class_counts=run.ctx.class_counts, class_names=run.class_names,
                         train_logits=lambda: tuple(map(np.asarray, train_logits())))


def memory_rounds(run: train.Run, net: heads.FrozenNet, head: heads.Head, tx, length: int):
  """round(state) of the in-memory feed: ``length`` steps in one jitted scan, images on device."""
  images = jax.device_put(run.data.train.images)
  return jax.jit(functools.partial(
      programs.head_steps, head=head, tx=tx, length=length,
      images=lambda key, ids: heads.augmented_images(key, images, ids, net, head.augment)))


def stream_rounds(run: train.Run, net: heads.FrozenNet, head: heads.Head, tx, length: int):
  """round(state) of the streamed feed: the round's ids from the device, exactly those images
  decoded on the host (a step ahead of the device), one jitted step each."""
  decode = grain_loader.make_id_decoder(run.config, run.streamed.splits.train, augment=head.augment,
                                        seed_offset=head.seed_salt)
  ids_fn = jax.jit(functools.partial(programs.head_ids, head=head, length=length))
  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  place = lambda x: jax.make_array_from_process_local_data(replicated, x)  # same on every host
  step_fn = jax.jit(lambda state, ids, x: programs.head_step(
      state, ids, augment.normalize(x, net.mean, net.std), head=head, tx=tx))

  def round_(state):
    first, ids = int(np.ravel(jax.device_get(state.step))[0]), np.asarray(ids_fn(state))
    images, totals = decode(ids[0], first), None
    for i in range(length):
      state, metrics = step_fn(state, place(ids[i]), place(images))
      totals = metrics if totals is None else programs.accumulate(totals, metrics)
      if i + 1 < length:  # decoded while the device runs the step just issued
        images = decode(ids[i + 1], first + i + 1)
    return state, jax.tree.map(lambda t: t / length, totals)

  return round_


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Phase I (loaded or trained), then the phase-II head of the two-phase ``config.method``;
  returns the summary (``workdir/summary.json``)."""
  method = methods.get_method(config.method)
  cfg = config[method.phase2_group]
  net, p1_run, phase1_summary = load_phase1(config, workdir, method.phase2_group)
  head = method.make_head(config, net)
  files.makedirs(workdir)
  if jax.process_index() == 0:
    if head.description:
      print(head.description)
    for name, value in head.files.items():
      files.write_json_atomic(files.join(workdir, name), value)
    files.write_json_atomic(files.join(workdir, config_lib.CONFIG_FILE),
                            provenance.config_record(config))
    data_lib.save_selection(train.selection(p1_run), workdir)
    files.write_json_atomic(files.join(workdir, PHASE1_FILE),
                            {"workdir": files.resolve(net.workdir), "summary": phase1_summary})

  steps = head.train_steps
  rounds, length = (steps // cfg.eval_every, cfg.eval_every) if steps else (1, 0)
  lr = cfg.lr if cfg.schedule == "constant" else optax.cosine_decay_schedule(cfg.lr, max(steps, 1))
  tx = optim.sgd(lr, cfg.momentum, False, cfg.weight_decay)
  state = ts.TrainState(step=jnp.zeros((), jnp.int32), params=head.fold(head.init, net.params),
                        batch_stats=net.batch_stats, opt_state=tx.init(head.init),
                        hparams={"head": head.init}, rng=heads.phase2_key(config.seed, head.seed_salt))
  state = parallel.replicate(state, p1_run.mesh)  # the loaded arrays' shardings: one compile
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints)
  state, done_rounds = checkpointing.restore_latest(mngr, state)
  feed_round = (stream_rounds if p1_run.streamed is not None else memory_rounds)(
      p1_run, net, head, tx, length) if length else None

  def train_round(state, round_):
    del round_
    metrics = [{}]
    if feed_round is not None:
      state, metrics = feed_round(state)
      metrics = loop.per_replica(metrics, 1)
    return state.replace(params=head.fold(state.hparams["head"], net.params)), metrics

  state = loop.run_epochs(state, workdir=workdir, mngr=mngr, start=done_rounds, end=rounds,
                          train_epoch=train_round, evaluate=train.evaluator(p1_run), eval_every=1,
                          checkpoint_every=1, unit="round")
  extra = {"parameters": models.count_params(state.params), "phase1_workdir": files.resolve(net.workdir)}
  note = ""
  if phase1_summary:
    extra["phase1_final_top1_error"] = phase1_summary.get("final_top1_error")
    note = f"phase I ({net.workdir}): final top-1 error {phase1_summary['final_top1_error']:.2f}%"
  return report.finish(workdir, replicas=1, epochs=rounds, class_names=net.class_names,
                       class_counts=net.class_counts, plots=False, extra=[extra], note=note)
