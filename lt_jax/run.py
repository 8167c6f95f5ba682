"""run(config, workdir): the one entry of a run. Validates the config and the workdir once, before
any data is read, takes the workdir's lock (one writer per workdir; process 0 of a multi-host run),
checks that a workdir holding a run gets the same run, and, with stop signals caught
(``loop.stop_on_signals``), trains a one-phase method (``train``) or runs a two-phase one
(``two_phase``)."""

import contextlib
import datetime

from absl import logging
import jax
import ml_collections

from lt_jax import config as config_lib
from lt_jax import files
from lt_jax import loop
from lt_jax import methods
from lt_jax import train
from lt_jax import two_phase

CHANGES_FILE = "config_changes.jsonl"  # the safe fields each re-run changed, one line per re-run


def record_changes(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a re-run whose config changes the result; logs and records the safe changes."""
  changed = config_lib.changes_from_saved(config, workdir)
  if changed and jax.process_index() == 0:
    logging.info("re-run of %s with changed fields %s", workdir, changed)
    files.append_json_line(files.join(workdir, CHANGES_FILE), {
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "changed": {k: {"was": was, "now": now} for k, (was, now) in changed.items()}})


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir`` (resuming there); returns the summary.

  Raises ValueError (config, or a re-run with another config), NotADirectoryError /
  PermissionError (workdir), FileExistsError (another process runs in ``workdir``) or, after
  checkpointing, loop.Preempted (a stop signal).
  """
  config_lib.validate(config)
  files.check_writable_dir(workdir)
  with files.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    record_changes(config, workdir)
    with loop.stop_on_signals():
      if methods.get_method(config.method).two_phase:
        return two_phase.run(config, workdir)
      return train.train_and_evaluate(config, workdir)
