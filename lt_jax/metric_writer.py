"""Metrics to ``workdir/metrics.jsonl`` (one JSON object a line) and TensorBoard event files.

Each record has a ``kind`` (train | eval) and an ``epoch``: scalars and per-class recall, so a record
grows with C, not C^2. A resumed run may write an epoch again (killed after logging, before
checkpointing); readers keep the last record per (kind, epoch). A partial last line (killed while
appending it) is cut off when the next run opens the file. The confusion matrix of the final
evaluation is written once, compressed, to ``workdir/confusion.npz``.
"""

import io
import json
import math
import os
import shutil
import tempfile

from absl import logging
import jax
import numpy as np
from tensorboardX import SummaryWriter

from lt_jax import files

CONFUSION_FILE = "confusion.npz"


def drop_partial_line(path: str) -> None:
  """Cuts a last line without its newline (a run killed while appending it) off ``path``, so
  the next record starts a line of its own; a local file only (a URL is rewritten whole)."""
  if files.is_url(path) or not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)
      logging.warning("%s: dropped a partial last line (%d bytes) left by an interrupted run",
                      path, len(data) - data.rfind(b"\n") - 1)


class MetricWriter:
  """Appends records to the JSONL file and scalars to TensorBoard (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = files.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0
    # tensorboardX writes gs:// only with google-cloud-storage installed: on a URL it writes
    # locally and each flush copies the event files to workdir/tensorboard.
    self._tb_dir = files.join(workdir, "tensorboard")
    self._tb_local = (tempfile.mkdtemp(prefix="lt_jax_tb") if self.active and files.is_url(workdir)
                      else self._tb_dir)
    self._tb = SummaryWriter(self._tb_local) if self.active else None
    if self.active:
      drop_partial_line(self.path)

  def write(self, kind: str, epoch: int, step: int, values: dict) -> None:
    if not self.active:
      return
    record = {"kind": kind, "epoch": epoch, "step": step, **values}
    files.append_json_line(self.path, record)
    for name, value in values.items():
      if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
        self._tb.add_scalar(f"{kind}/{name}", value, step)
    self._tb.flush()
    self._copy_events()

  def _copy_events(self) -> None:
    if self._tb_local != self._tb_dir:
      for name in os.listdir(self._tb_local):
        files.copy(os.path.join(self._tb_local, name), files.join(self._tb_dir, name))

  def write_confusion(self, confusion) -> None:
    """counts[true, predicted] of the final evaluation, to ``confusion.npz`` (atomic)."""
    if not self.active:
      return
    buffer = io.BytesIO()
    np.savez_compressed(buffer, confusion=np.asarray(confusion, np.int32))
    files.write_atomic(files.join(os.path.dirname(self.path), CONFUSION_FILE), buffer.getvalue())

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._copy_events()
      if self._tb_local != self._tb_dir:
        shutil.rmtree(self._tb_local, ignore_errors=True)


def read_records(workdir: str, kind: str, max_epoch: int | None = None) -> list[dict]:
  """The records of ``kind`` in epoch order, the last one kept per epoch, epochs <= max_epoch."""
  path = files.join(workdir, "metrics.jsonl")
  if not files.exists(path):
    return []
  by_epoch = {}
  with files.open(path) as f:
    for line in f:
      record = json.loads(line)
      if record["kind"] == kind and (max_epoch is None or record["epoch"] <= max_epoch):
        by_epoch[record["epoch"]] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def read_confusion(workdir: str) -> np.ndarray | None:
  """The final confusion matrix of a finished run (None before the run has finished)."""
  path = files.join(workdir, CONFUSION_FILE)
  if not files.exists(path):
    return None
  with files.open(path, "rb") as f, np.load(io.BytesIO(f.read())) as saved:
    return saved["confusion"]
