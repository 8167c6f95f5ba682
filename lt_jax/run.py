"""run(config, workdir): the one entry of a run. Validates the config once, before any data is read
(and, on a workdir that holds a run, that it is the same run), then trains a one-phase method
(``train``) or runs a two-phase one (``two_phase``)."""

import datetime
import os

from absl import logging
import jax
import ml_collections

from lt_jax import config as config_lib
from lt_jax import files
from lt_jax import methods
from lt_jax import train
from lt_jax import two_phase

CHANGES_FILE = "config_changes.jsonl"  # the safe fields each re-run changed, one line per re-run


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir`` (resuming there); returns the summary."""
  config_lib.validate(config)
  changed = config_lib.changes_from_saved(config, workdir)
  if changed and jax.process_index() == 0:
    logging.info("re-run of %s with changed fields %s", workdir, changed)
    files.append_json_line(os.path.join(workdir, CHANGES_FILE), {
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "changed": {k: {"was": was, "now": now} for k, (was, now) in changed.items()}})
  if methods.get_method(config.method).two_phase:
    return two_phase.run(config, workdir)
  return train.train_and_evaluate(config, workdir)
