"""Step-level progress lines for logs that are not a terminal (SLURM ``.out`` files, TPU logs).

Every N steps (``train.log_every_steps``) process 0 logs
``step 1200/39000 (epoch 3.1/100): 41.2 steps/s, 5274 images/s, ETA 0:15:17, loss 1.2345``:
steps/s and images/s over the steps since the previous line; the ETA at the mean rate since the
first line (so it leaves out compilation and counts the evaluations and checkpoints between).

Granularity: the streamed feed runs one jitted call a step, so a line comes after exactly every N
steps. The in-memory feed runs ``train.steps_per_call`` steps per jitted call (on GPU/TPU by
default the whole epoch, one ``lax.scan``; on CPU one step), and the host sees the steps only when
a call returns: a line comes at the first call boundary at or after each multiple of N, so with
the default scan at most one a epoch. Set ``train.steps_per_call`` to N (or a divisor) for lines
within an epoch, at the cost of a dispatch per call.
"""

import datetime
import sys
import time

from absl import logging
import jax
import numpy as np

AUTO_EVERY = 100  # steps between lines when train.log_every_steps = -1 and stderr is no terminal


def every_steps(config) -> int:
  """``train.log_every_steps``: N > 0, 0 = off, -1 (default) = ``AUTO_EVERY`` when stderr is not a
  terminal (a cluster log), else off (the tqdm bar shows progress)."""
  every = config.train.get("log_every_steps", -1)  # >= -1: config.validate
  if every == -1:
    return 0 if sys.stderr.isatty() else AUTO_EVERY
  return every


class StepProgress:
  """Logs a line every ``every`` steps of ``total`` (process 0 only); ``update`` after each call."""

  def __init__(self, every: int, *, total: int, done: int, steps_per_epoch: int, batch_size: int,
               clock=time.monotonic, log=logging.info):
    self.every = every if jax.process_index() == 0 else 0
    self.total, self.steps_per_epoch, self.batch_size = total, steps_per_epoch, batch_size
    self._clock, self._log = clock, log
    self._last_step, self._last_time = done, clock()
    self._first = None  # (step, time) of the first line
    self._next = (done // every + 1) * every if every > 0 else None

  def update(self, done: int, loss) -> None:
    """``done`` steps finished in all, ``loss`` the last call's mean loss (fetched only here; None
    when the method reports none)."""
    if not self.every or done < self._next:
      return
    now = self._clock()
    rate = (done - self._last_step) / max(now - self._last_time, 1e-9)
    mean = rate if self._first is None else (done - self._first[0]) / max(now - self._first[1], 1e-9)
    eta = datetime.timedelta(seconds=round((self.total - done) / mean)) if mean > 0 else "?"
    self._first = self._first or (done, now)
    loss = "?" if loss is None else f"{float(np.mean(jax.device_get(loss))):.4f}"
    self._log("step %d/%d (epoch %.1f/%d): %.2f steps/s, %.0f images/s, ETA %s, loss %s", done,
              self.total, done / self.steps_per_epoch, self.total // self.steps_per_epoch, rate,
              rate * self.batch_size, eta, loss)
    self._last_step, self._last_time = done, now
    self._next = (done // self.every + 1) * self.every
