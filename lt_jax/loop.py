"""The one training loop: epochs (or phase-II rounds) with the NaN stop, eval and checkpoint cadence,
progress bar and metric records, for every kind of run.

Feeds differ (the in-memory scanned epoch, the streamed grain batches, a phase-II head's rounds);
each hands the loop ``train_epoch(state, epoch) -> (state, [metrics per replica])`` and
``evaluate(state) -> [result per replica]``.

Stop signals (``stop_on_signals``: SIGTERM, SIGINT, SIGUSR1) are honoured after the epoch they
arrive in: its checkpoint is written, then ``Preempted`` is raised (the CLI exits with status 75).
The streamed feed, whose epoch can be long, asks ``stop_requested_in_epoch`` between steps and
stops there (``checkpointing.save_in_epoch``). A multi-host run instead asks JAX's preemption
service (which catches SIGTERM on every host) so that all hosts stop after the same epoch.
"""

import contextlib
import signal
import threading
import time
from typing import Callable

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from lt_jax import checkpointing
from lt_jax import metric_writer
from lt_jax import report


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Preempted(Exception):
  """A stop signal arrived; the last finished epoch is checkpointed: run again to resume."""


SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_received = []  # stop signals received inside stop_on_signals


@contextlib.contextmanager
def stop_on_signals():
  """While inside, ``SIGNALS`` ask the loop to checkpoint and stop after the current epoch; a second
  one acts as it would outside. A no-op off the main thread and in multi-host runs."""
  if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.getsignal(s) for s in SIGNALS}

  def handler(signum, frame):
    del frame
    _received.append(signum)
    for s, h in previous.items():
      signal.signal(s, h)
    logging.warning("%s: checkpointing and stopping after this epoch (send it again to stop at "
                    "once)", signal.Signals(signum).name)

  for s in SIGNALS:
    signal.signal(s, handler)
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
    _received.clear()


def stop_requested_in_epoch() -> bool:
  """Whether a stop signal arrived (single-process runs; a multi-host run stops between epochs)."""
  return bool(_received)  # only stop_on_signals adds to it, and only in single-process runs


def run_epochs(state, *, workdir: str, mngr, start: int, end: int, train_epoch: Callable,
               evaluate: Callable, eval_every: int, checkpoint_every: int, replicas: int = 1,
               loaders: dict | None = None, unit: str = "epoch"):
  """Epochs ``start + 1 .. end``: train, write records, evaluate every ``eval_every`` and at the
  end, checkpoint every ``checkpoint_every`` and at the end (with the streamed ``loaders``'
  positions). Returns the final state.

  Raises NonFiniteLossError when a training loss is not finite (the last good checkpoint stays),
  Preempted after checkpointing an epoch before ``end`` in which a stop signal arrived.
  """
  writers = [metric_writer.MetricWriter(d) for d in report.replica_dirs(workdir, replicas)]
  bar = tqdm.tqdm(range(start, end), initial=start, total=end, unit=unit,
                  disable=jax.process_index() != 0 or None, dynamic_ncols=True)  # None: off when
  # stderr is not a terminal (a cluster log gets progress lines and the epoch line below instead)
  try:
    for epoch in bar:
      started = time.time()
      state, metrics = train_epoch(state, epoch)
      done = epoch + 1
      losses = [m["loss"] for m in metrics if "loss" in m]
      if not np.all(np.isfinite(losses)):
        last = mngr.latest_step()
        kept = (f"The last good checkpoint ({unit} {last}) is kept in {workdir}/checkpoints"
                if last is not None else f"No checkpoint was written yet in {workdir}")
        raise NonFiniteLossError(f"training loss is {losses} in {unit} {done}; stopped. {kept}; "
                                 "lower the learning rate or check the data.")
      seconds = time.time() - started
      results = evaluate(state) if done % eval_every == 0 or done == end else None
      step = int(np.ravel(jax.device_get(state.step))[0])
      for r, writer in enumerate(writers):
        if metrics[r]:
          writer.write("train", done, step, {**metrics[r], "epoch_seconds": seconds})
        if results:
          writer.write("eval", done, step, {k: v for k, v in results[r].items() if k != "confusion"})
          if done == end:
            writer.write_confusion(results[r]["confusion"])
      postfix = {"loss": f"{np.mean(losses):.3f}"} if losses else {}
      if results:
        postfix["err"] = f"{np.mean([r['top1_error'] for r in results]):.2f}"
      bar.set_postfix(postfix)
      if bar.disable and jax.process_index() == 0:
        logging.info("%s %d/%d: %s", unit, done, end,
                     ", ".join(f"{k} {v}" for k, v in postfix.items()))
      stop = (multihost_utils.reached_preemption_sync_point(done) if jax.process_count() > 1
              else stop_requested_in_epoch()) and done < end
      if done % checkpoint_every == 0 or done == end or stop:
        checkpointing.save(mngr, state, done, loaders)
      if stop:
        raise Preempted(f"stopped by a signal after {unit} {done} of {end}; checkpointed in "
                        f"{workdir}/checkpoints: run the same command again to resume")
  finally:
    for writer in writers:
      writer.close()
  return state


def per_replica(metrics, replicas: int) -> list[dict]:
  """Device metrics (leaves of shape () or (R,)) as one dict of floats per replica."""
  metrics = jax.device_get(metrics)
  return [{k: float(v) for k, v in report.replica(metrics, r, replicas).items()} for r in range(replicas)]
