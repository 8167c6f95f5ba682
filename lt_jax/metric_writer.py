"""Metrics to ``workdir/metrics.jsonl`` (one JSON object a line) and TensorBoard event files.

Each record has a ``kind`` (train | eval) and an ``epoch``: scalars and per-class recall, so a record
grows with C, not C^2. A resumed run may write an epoch again (killed after logging, before
checkpointing); readers keep the last record per (kind, epoch). The confusion matrix of the final
evaluation is written once, compressed, to ``workdir/confusion.npz``.
"""

import io
import json
import math
import os

import jax
import numpy as np
from tensorboardX import SummaryWriter

from lt_jax import files

CONFUSION_FILE = "confusion.npz"


class MetricWriter:
  """Appends records to the JSONL file and scalars to TensorBoard (process 0 only)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if self.active else None

  def write(self, kind: str, epoch: int, step: int, values: dict) -> None:
    if not self.active:
      return
    record = {"kind": kind, "epoch": epoch, "step": step, **values}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for name, value in values.items():
      if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
        self._tb.add_scalar(f"{kind}/{name}", value, step)
    self._tb.flush()

  def write_confusion(self, confusion) -> None:
    """counts[true, predicted] of the final evaluation, to ``confusion.npz`` (atomic)."""
    if not self.active:
      return
    buffer = io.BytesIO()
    np.savez_compressed(buffer, confusion=np.asarray(confusion, np.int32))
    files.write_atomic(os.path.join(os.path.dirname(self.path), CONFUSION_FILE), buffer.getvalue())

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_records(workdir: str, kind: str, max_epoch: int | None = None) -> list[dict]:
  """The records of ``kind`` in epoch order, the last one kept per epoch, epochs <= max_epoch."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_epoch = {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if record["kind"] == kind and (max_epoch is None or record["epoch"] <= max_epoch):
        by_epoch[record["epoch"]] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def read_confusion(workdir: str) -> np.ndarray | None:
  """The final confusion matrix of a finished run (None before the run has finished)."""
  path = os.path.join(workdir, CONFUSION_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as saved:
    return saved["confusion"]
