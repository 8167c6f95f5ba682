"""Trains and evaluates a long-tailed image classifier (lt-jax-train, or python -m lt_jax.main).

usage: lt-jax-train --config=NAME|FILE[:ARG] --workdir=DIR [--config.FIELD=VALUE ...]

  --config   a shipped config by name (quickstart, ce_cifar, mfm_cifar, ...; configs/ in the
             repository) or a config file of your own; ':smoke' shrinks model, data and schedule.
  --workdir  where checkpoints, metrics.jsonl, summary.json and plots go. Running the same command
             again resumes from the latest checkpoint; a changed config is refused unless only
             safe fields (epochs, cadence, plots) change.

examples:
  lt-jax-train --config=quickstart --workdir=runs/quick                 # offline, ~3 min on CPU
  lt-jax-train --config=mfm_cifar:smoke --workdir=/tmp/smoke            # tiny run of any config
  lt-jax-train --config=ce_cifar --workdir=runs/ce --config.optim.lr=0.05 --config.dataset.imbalance=50
  lt-jax-train --config=ce_cifar --workdir=runs/ce                      # again: resumes runs/ce
  lt-jax-train --config=ce_cifar --workdir=runs/ce --config.train.epochs=300  # continue training

Multi-host: --distributed, or LT_JAX_DISTRIBUTED=1 (0/false/no: off), calls
jax.distributed.initialize() first. Exit status: 0 done, 1 error (one line; a full or read-only
disk too, naming the path), 75 (EX_TEMPFAIL) stopped by SIGTERM / SIGINT / SIGUSR1 after
checkpointing: requeue the same command.
"""

import errno
import os
import sys

from absl import flags
from absl import logging

from lt_jax import cli as cli_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", None, "Call jax.distributed.initialize() first "
                                 "(multi-host); default: the LT_JAX_DISTRIBUTED variable, else off.")
flags.mark_flags_as_required(["workdir"])
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # named in one line, like a bad input


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]} (flags are --name=value)")
  try:
    distributed = (_DISTRIBUTED.value if _DISTRIBUTED.value is not None
                   else cli_lib.env_flag("LT_JAX_DISTRIBUTED"))
  except ValueError as e:
    sys.exit(f"error: {e}")
  import jax  # pylint: disable=g-import-not-at-top

  # orbax logs every save step at INFO; keep the run's own messages readable
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  if distributed:
    jax.distributed.initialize()
  logging.info("process %d of %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
  from lt_jax import loop  # pylint: disable=g-import-not-at-top
  from lt_jax import run  # pylint: disable=g-import-not-at-top

  try:
    run.run(flags.FLAGS.config, _WORKDIR.value)
  except loop.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(os.EX_TEMPFAIL)
  except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
          loop.NonFiniteLossError) as e:
    sys.exit(f"error: {e}")
  except OSError as e:
    message = disk_error(e)
    if message is None:
      raise
    sys.exit(message)


def disk_error(e: OSError):
  """The one-line message for a full or read-only disk (``DISK_ERRORS``), naming the path; else None."""
  if e.errno not in DISK_ERRORS:
    return None
  return (f"error: {e} (a full or read-only disk: free space, or point --workdir / "
          "dataset.data_dir elsewhere, then run the same command again)")


def cli(argv=None):
  """Console-script entry (``lt-jax-train``)."""
  cli_lib.run_with_config(main, __doc__, argv)


if __name__ == "__main__":
  cli()
