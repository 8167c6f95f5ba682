"""Builds a run's long-tailed data and prints its summary as JSON (lt-jax-data, python -m lt_jax.data).

usage: lt-jax-data --config=NAME|FILE[:ARG] [--config.dataset.seed=1] [--workdir=DIR]

examples:
  lt-jax-data --config=quickstart
  lt-jax-data --config=ce_cifar --config.dataset.imbalance=50 --workdir=/tmp/sel

Prints ``json.dumps(summary)`` (per-class counts of train, meta and test) on stdout; with
``--workdir`` also writes ``DIR/data_selection.json`` (the summary and the chosen indices).
"""

import json

from absl import app
from absl import flags
from absl import logging

from lt_jax import cli as cli_lib
from lt_jax import data as data_lib

_WORKDIR = flags.DEFINE_string("workdir", "", "Where to write data_selection.json (optional).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data = data_lib.load(flags.FLAGS.config)
  record = data.selection()
  print(json.dumps({k: v for k, v in record.items() if k != "indices"}), flush=True)
  if _WORKDIR.value:
    logging.info("wrote %s", data_lib.save_selection(record, _WORKDIR.value))


def cli(argv=None):
  """Console-script entry (``lt-jax-data``)."""
  cli_lib.run_with_config(main, __doc__, argv)


if __name__ == "__main__":
  cli()
