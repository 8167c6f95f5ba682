"""Builds a run's long-tailed data and prints its summary as JSON.

  python -m lt_jax.data --config=configs/ce_cifar.py [--config.dataset.seed=1] [--workdir=DIR]

Prints ``json.dumps(summary)`` (per-class counts of train, meta and test) on stdout; with
``--workdir`` also writes ``DIR/data_selection.json`` (the summary and the chosen indices).
"""

import json

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from lt_jax import data as data_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Where to write data_selection.json (optional).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=CONFIG_FILE is required")
  data = data_lib.load(_CONFIG.value)
  record = data.selection()
  print(json.dumps({k: v for k, v in record.items() if k != "indices"}), flush=True)
  if _WORKDIR.value:
    logging.info("wrote %s", data_lib.save_selection(record, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
