"""Evaluate a run's checkpoint on any test set its config can describe, without touching the run.

  python -m lt_jax.evaluate --workdir=DIR [--epoch=N] [--config.dataset.test=test1 ...]

Loads ``DIR/config.json`` and the latest checkpoint (or epoch ``N``; each replica of a
``replicas = R`` run; the phase-II network of a two-phase run, on its phase-I run's data and
normalisation), evaluates it with the run's own evaluator (``train.evaluator``) and writes
``DIR/evaluations/NAME.json``: the keys of ``summary.json`` (top-1 / top-3 / top-5 error, shot
groups, per-class recall; ``final_*`` and ``best_*`` are the one checkpoint's figures) plus the
checkpoint's epoch, the overrides and the test set's class counts.
Overrides may change only the fields that choose the test images (``OVERRIDABLE``); the training
set's class counts n_c (shot groups) and normalisation stay the run's. The checkpoints are
opened read-only and nothing else of the run is written.
"""

import ast
import dataclasses
import datetime
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from lt_jax import cli as cli_lib
from lt_jax import files

EVAL_DIR = "evaluations"
# Fields an evaluation may override: they choose the test images (and the resources to read them),
# never the network, its training set or its normalisation.
OVERRIDABLE = ("dataset.test", "dataset.test_imbalance", "dataset.seed", "dataset.name",
               "dataset.source", "dataset.path", "dataset.data_dir", "dataset.test_list",
               "dataset.check_files", "train.eval_batch_size", "loader.workers", "loader.prefetch",
               "loader.eval_crop_ratio")


@dataclasses.dataclass
class Loaded:
  """A trained workdir: ``run`` (``train.Run``: model, normalisation, data, class counts) holds the
  network of checkpoint ``epoch`` in ``run.state.params`` / ``batch_stats``."""
  workdir: str
  config: ml_collections.ConfigDict  # the workdir's config.json
  run: object  # train.Run; for a two-phase run, its phase-I run with the phase-II network
  epoch: int


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def saved_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in ``workdir/config.json`` (JSON lists back to tuples)."""
  from lt_jax import config as config_lib  # pylint: disable=g-import-not-at-top  (imports JAX)
  from lt_jax import provenance  # pylint: disable=g-import-not-at-top
  saved = files.read_json(os.path.join(workdir, config_lib.CONFIG_FILE),
                          "the config.json of an lt_jax run: is --workdir a run's folder?")
  saved.pop(provenance.KEY, None)  # where and with what it ran, not a config field
  return ml_collections.ConfigDict(_tuples(saved))


def parse_value(current, text: str, name: str):
  """``text`` as a value of ``current``'s type (bool, int, float, str, tuple)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError
      return text.lower() in ("true", "1")
    if isinstance(current, (int, float)):
      return type(current)(float(text) if isinstance(current, float) else int(text))
    if isinstance(current, tuple):
      return tuple(ast.literal_eval(text))
  except (ValueError, SyntaxError, TypeError):
    raise ValueError(f"--config.{name}={text!r}: expected a {type(current).__name__} like "
                     f"{current!r}") from None
  return text


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``overrides`` ({'a.b': text}) applied; ValueError naming a field
  that is unknown or changes the trained model."""
  config = ml_collections.ConfigDict(config.to_dict())
  for name, text in overrides.items():
    *path, last = name.split(".")
    node = config
    for part in path:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or last not in node:
      raise ValueError(f"--config.{name}: no such config field")
    if name not in OVERRIDABLE:
      raise ValueError(f"--config.{name}: an evaluation may override only the fields that choose "
                       f"the test set ({', '.join(OVERRIDABLE)}); {name} changes the trained model "
                       "or its training data: train a new run for it")
    node[last] = parse_value(node[last], str(text), name) if isinstance(text, str) else text
  return config


def load(workdir: str, epoch: int | None = None) -> Loaded:
  """The run in ``workdir`` at checkpoint ``epoch`` (default: the latest), opened read-only."""
  from lt_jax import checkpointing  # pylint: disable=g-import-not-at-top  (JAX after the flags)
  from lt_jax import methods  # pylint: disable=g-import-not-at-top
  from lt_jax import parallel  # pylint: disable=g-import-not-at-top
  from lt_jax import train  # pylint: disable=g-import-not-at-top
  from lt_jax import two_phase  # pylint: disable=g-import-not-at-top
  config = saved_config(workdir)
  method = methods.get_method(config.method)
  if not method.two_phase:
    run = train.setup(config, workdir, read_only=True)
    if not run.start_epoch:
      raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint; train the run first")
    if epoch is not None and epoch != run.start_epoch:
      run.state = checkpointing.restore(run.mngr, run.state, epoch)
    return Loaded(workdir, config, run, run.start_epoch if epoch is None else epoch)
  # Phase II: the phase-I run gives model, data and normalisation; the phase-II checkpoint holds
  # the folded plain network (params, batch_stats) beside the head's own state.
  p1_config, p1_workdir, _ = two_phase.phase1_config(config, workdir, method.phase2_group)
  run = train.setup(p1_config, p1_workdir, read_only=True)
  mngr = checkpointing.manager(workdir, config.train.keep_checkpoints, read_only=True)
  if epoch is None:  # the latest that reads back (a damaged one is named and skipped)
    saved, epoch = checkpointing.restore_latest(mngr)
  elif epoch in mngr.all_steps():
    saved = checkpointing.restore_arrays(mngr, epoch)
  if not epoch or epoch not in mngr.all_steps():
    raise FileNotFoundError(f"{workdir}/checkpoints has no phase-II checkpoint of round "
                            f"{epoch or '(latest)'}; saved rounds: "
                            f"{sorted(mngr.all_steps()) or 'none'}")
  run.state = parallel.replicate(
      run.state.replace(params=saved["params"], batch_stats=saved.get("batch_stats") or {}),
      run.mesh)
  return Loaded(workdir, config, run, epoch)


def use_test_set(run, config: ml_collections.ConfigDict) -> np.ndarray:
  """Points ``run``'s test split at the one ``config`` describes (same classes); returns its labels."""
  from lt_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from lt_jax.data import stream  # pylint: disable=g-import-not-at-top
  if run.streamed is not None:
    source = stream.load(config, needs_meta=False)
    names, labels = source.splits.class_names, source.test.labels
    run.streamed = dataclasses.replace(run.streamed, test=source.test,
                                       test_indices=source.test_indices)
  else:
    data = data_lib.load(config)
    names, labels = data.class_names, data.test.labels
    if data.test.images.shape[1:] != run.data.test.images.shape[1:]:
      raise ValueError(f"the test images of the overridden data are {data.test.images.shape[1:]}; "
                       f"the run was trained on {run.data.test.images.shape[1:]}")
    run.data = dataclasses.replace(run.data, test=data.test)
  if tuple(names) != tuple(run.class_names):
    raise ValueError(f"the overridden data has classes {list(names)[:5]}... ({len(names)}); the "
                     f"run was trained on {list(run.class_names)[:5]}... ({len(run.class_names)})")
  run.config = config
  return np.asarray(labels)


def default_name(epoch: int, overrides: dict) -> str:
  """``epoch30`` or ``epoch30_dataset.test=test1``: a file name from the checkpoint and overrides."""
  words = [f"epoch{epoch}"] + [f"{k}={v}" for k, v in sorted(overrides.items())]
  return re.sub(r"[^\w.=+-]", "_", "_".join(words))


def evaluate(workdir: str, *, epoch: int | None = None, overrides: dict | None = None,
             name: str = "") -> tuple[dict, str]:
  """Evaluates ``workdir``'s checkpoint (``epoch``, default the latest) on the test set of its
  config with ``overrides``; writes ``workdir/evaluations/NAME.json``; returns (result, path)."""
  import jax  # pylint: disable=g-import-not-at-top
  from lt_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from lt_jax import report  # pylint: disable=g-import-not-at-top
  from lt_jax import train  # pylint: disable=g-import-not-at-top
  overrides = dict(overrides or {})
  if os.sep in name or name.startswith("."):
    raise ValueError(f"--name={name!r}: expected a file name (no folders), e.g. test1_epoch30")
  config_lib.validate(with_overrides(saved_config(workdir), overrides))  # before any data is read
  loaded = load(workdir, epoch)
  run = loaded.run
  test_config = with_overrides(run.config, overrides)
  config_lib.validate(test_config)
  if overrides:
    labels = use_test_set(run, test_config)
  else:
    labels = run.data.test.labels if run.data is not None else run.streamed.test.labels
  results = train.evaluator(run)(run.state)
  summaries = [report.summarise([{**{k: v for k, v in r.items() if k != "confusion"},
                                  "epoch": loaded.epoch}]) for r in results]
  result = summaries[0] if len(summaries) == 1 else report.aggregate(summaries)
  num_classes = len(run.class_names)
  result.update({
      "workdir": os.path.abspath(workdir),
      "checkpoint_epoch": loaded.epoch,
      "overrides": overrides,
      "test_counts": np.bincount(labels, minlength=num_classes).tolist(),
      "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  })
  path = os.path.join(workdir, EVAL_DIR, f"{name or default_name(loaded.epoch, overrides)}.json")
  if jax.process_index() == 0:
    files.write_json_atomic(path, result)
    print(report.format_summary(result, run.class_names, run.ctx.class_counts))
  return result, path


# --- command line ----------------------------------------------------------------------------------

_OVERRIDES = {}


def split_overrides(argv: list[str]) -> tuple[list[str], dict]:
  """(the other arguments, {'a.b': 'v'} of each ``--config.a.b=v``)."""
  rest, overrides = [], {}
  for arg in argv:
    if arg.startswith("--config."):
      name, eq, value = arg[len("--config."):].partition("=")
      if not eq:
        raise app.UsageError(f"{arg}: write overrides as --config.a.b=VALUE")
      overrides[name] = value
    else:
      rest.append(arg)
  return rest, overrides


def parse_args(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the ``--config.a.b=v`` overrides kept aside."""
  rest, overrides = split_overrides(argv)
  _OVERRIDES.update(overrides)
  return app.parse_flags_with_usage(rest)


def quiet_orbax() -> None:
  """Keeps orbax's per-restore INFO lines out of a command's output (as ``lt_jax.main`` does)."""
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  quiet_orbax()
  try:
    _, path = evaluate(flags.FLAGS.workdir, epoch=flags.FLAGS.epoch, overrides=_OVERRIDES,
                       name=flags.FLAGS.name)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {path}")


def cli():
  """``lt-jax-evaluate``: the console-script entry point."""
  flags.DEFINE_string("workdir", None, "A trained run's directory (holds config.json, checkpoints/).")
  flags.DEFINE_integer("epoch", None, "Checkpoint to evaluate (default: the latest; a two-phase "
                       "run counts phase-II rounds).")
  flags.DEFINE_string("name", "", "Result file name under WORKDIR/evaluations/ (default: from "
                      "the epoch and the overrides).")
  flags.mark_flags_as_required(["workdir"])
  cli_lib.run_command(main, __doc__, flags_parser=parse_args)


if __name__ == "__main__":
  cli()
