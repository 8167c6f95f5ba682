"""Command line: ``python -m lt_jax.main --config=configs/X.py[:smoke] --workdir=DIR [--config.a.b=v]``.

Kept short: flags, optional multi-host initialisation, then ``run.run`` (validation once, then
one-phase training or a two-phase method). Re-running the same command on the same workdir
resumes from the latest checkpoint. Exit status: 0 done, 1 error (one line), 75 (EX_TEMPFAIL)
stopped by SIGTERM / SIGINT / SIGUSR1 after checkpointing: requeue the same command.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.getcwd())  # configs/*.py import configs/default.py relative to the repo root

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/ce_cifar.py[:smoke].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", bool(os.environ.get("LT_JAX_DISTRIBUTED")),
                                 "Call jax.distributed.initialize() first (multi-host; "
                                 "or set LT_JAX_DISTRIBUTED=1).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # pylint: disable=g-import-not-at-top

  # orbax logs every save step at INFO; keep the run's own messages readable
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("process %d of %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
  from lt_jax import loop  # pylint: disable=g-import-not-at-top
  from lt_jax import run  # pylint: disable=g-import-not-at-top

  try:
    run.run(_CONFIG.value, _WORKDIR.value)
  except loop.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(os.EX_TEMPFAIL)
  except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
          loop.NonFiniteLossError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
