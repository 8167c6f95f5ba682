"""Clusters and clouds: a smoke run on a ``gs://`` workdir emulated on local disk, the file layer on
URLs, one dataset build per job, loader workers from the CPU affinity, step-level progress lines.

The emulation: fsspec's ``gcs`` protocol (what ``etils.epath`` uses for ``gs://`` without
TensorFlow) is served by a local filesystem that maps ``gs://BUCKET/x`` to ``ROOT/BUCKET/x``, and
orbax's tensorstore spec for ``gs://`` (the ``gcs`` driver) is pointed at the same folder through
tensorstore's ``file`` driver. Every lt_jax path is then a ``gs://`` string taking the URL
branches of ``lt_jax.files``; a path handled with ``os.path`` / ``open`` instead would land under
the working directory as ``./gs:/...``, which the test checks is absent.
"""

import importlib
import json
import logging
import os
import re

from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import ce_cifar
from conftest import tiny_config
from lt_jax import files
from lt_jax import progress
from lt_jax import run
from lt_jax import checkpointing
from lt_jax.data import folder_builder
from lt_jax.data import grain_loader


class LocalBucket(LocalFileSystem):
  """``gs://BUCKET/x`` served from ``ROOT/BUCKET/x``; names come back bucket-relative, as gcsfs's."""
  protocol = ("gs", "gcs")
  root = ""

  def __init__(self, **kwargs):  # an object store needs no folders before a write
    super().__init__(auto_mkdir=True, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = f"{cls.root}/{path[len(prefix):]}"
    return super()._strip_protocol(path)

  def glob(self, path, **kwargs):
    return [p[len(self.root) + 1:] for p in super().glob(path, **kwargs)]


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """The local folder behind ``gs://``; the working directory is a separate empty folder."""
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  root = tmp_path / "buckets"
  root.mkdir()
  monkeypatch.setattr(LocalBucket, "root", str(root))
  for name in ("gs", "gcs"):
    monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, name, LocalBucket)
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", lambda path: {
      "driver": "file", "path": f"{root}/{path.removeprefix('gs://')}"})
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield root
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  assert not os.listdir(cwd), "a gs:// path was written as a local path"


def test_smoke_run_on_a_bucket_url_writes_everything_there_and_reads_it_back(bucket, caplog):
  config = tiny_config(ce_cifar, **{"train.epochs": 2, "train.log_every_steps": 2})
  workdir = "gs://lt-test/runs/ce"
  caplog.set_level(logging.INFO)
  summary = run.run(config, workdir)
  logged = [r.getMessage() for r in caplog.records]
  steps = [m for m in logged if re.match(r"step \d+/\d+ \(epoch [\d.]+/2\): [\d.]+ steps/s, "
                                          r"\d+ images/s, ETA [\d:]+, loss [\d.]+$", m)]
  assert steps and steps[-1].startswith("step ") and int(steps[0].split()[1].split("/")[0]) == 2
  assert any(m.startswith("epoch 2/2: loss ") for m in logged)  # stderr is no terminal here
  local = bucket / "lt-test" / "runs" / "ce"
  for name in ("summary.json", "config.json", "data_selection.json", "metrics.jsonl",
               "confusion.npz"):
    assert (local / name).stat().st_size > 0, name
  assert (local / "plots" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(local / "tensorboard"))
  assert sorted(os.listdir(local / "checkpoints")) == ["1", "2"]
  assert not (local / files.LOCK_FILE).exists()  # released
  lines = (local / "metrics.jsonl").read_text().splitlines()  # appended through the URL branch
  assert [line.count('"kind": "train"') for line in lines].count(1) == 2
  assert files.read_json(f"{workdir}/summary.json", "a summary") == summary
  mngr = checkpointing.manager(workdir, 2, read_only=True)  # read back from the bucket
  assert mngr.latest_step() == 2
  saved = mngr.restore(2, args=ocp.args.StandardRestore())
  steps = [json.loads(line) for line in lines if '"kind": "train"' in line][-1]["step"]
  assert int(saved["step"]) == steps and saved["params"]


def test_file_layer_on_a_url(bucket):
  path = files.join("gs://b", "x", "a.json")
  assert path == "gs://b/x/a.json" and files.resolve(path) == path
  files.write_json_atomic(path, {"a": 1})
  files.append_json_line("gs://b/x/log.jsonl", {"n": 1})
  files.append_json_line("gs://b/x/log.jsonl", {"n": 2})
  assert files.read_json(path, "a") == {"a": 1}
  assert (bucket / "b" / "x" / "log.jsonl").read_text() == '{"n": 1}\n{"n": 2}\n'
  assert files.listdir("gs://b/x") == ["a.json", "log.jsonl"]
  with files.lock("gs://b/x"):
    with pytest.raises(FileExistsError, match="gs://b/x is in use by process"):
      with files.lock("gs://b/x"):
        pass
  assert not files.exists("gs://b/x/.lock")
  with pytest.raises(NotADirectoryError, match="workdir gs://b/x/a.json is a file"):
    files.check_writable_dir(path)


def test_one_dataset_build_per_job(tmp_path):
  """Process 0 builds, the others only wait at the barrier and read; a data_dir that only process 0
  sees is named."""
  target, events = str(tmp_path / "ds"), []

  def build():
    assert "build" not in events, "built twice"
    events.append("build")
    files.write_json_atomic(f"{target}/dataset_info.json", {})

  def process(index, count=3, barrier=lambda: events.append("barrier")):
    folder_builder.build_once(target, build, process_index=index, process_count=count,
                              barrier=barrier)

  with pytest.raises(FileNotFoundError, match="process 2 after process 0 prepared it: with 3 "
                     "processes, dataset.data_dir must be storage every process sees"):
    process(2)  # let through while nothing is there (process 0 wrote to its own disk)
  assert events == ["barrier"]
  process(1, barrier=lambda: process(0))  # process 0 builds while 1 waits at the barrier
  process(2)
  assert events == ["barrier", "build", "barrier", "barrier"]
  process(0)  # a later job: prepared, nobody builds
  process(0, count=1, barrier=None)  # one process: no barrier
  assert events == ["barrier", "build", "barrier", "barrier", "barrier"]


def test_workers_minus_one_counts_the_cpus_of_this_process(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6}, raising=False)
  assert grain_loader.resolve_workers(-1) == 3  # a SLURM task's 3 cores, not the node's
  assert grain_loader.resolve_workers(0) == 0


def test_progress_lines_every_n_steps_at_call_boundaries():
  lines, now = [], [0.0]
  bar = progress.StepProgress(4, total=40, done=4, steps_per_epoch=10, batch_size=8,
                              clock=lambda: now[0], log=lambda fmt, *a: lines.append(fmt % a))
  for done in (5, 7, 9, 10, 12, 20):  # call boundaries; the first multiple of 4 after 4 is 8
    now[0] += 1.0
    bar.update(done, np.float32(0.5))
  # Lines at 9 (8 passed: 5 steps in 3 s), 12 (3 in 2 s), 20 (8 in 1 s); the ETA at the mean rate
  # since the first line: 11 steps in 3 s at 20 (20 left: 5 s, where the last 1 s would say 2 s).
  assert lines == [
      "step 9/40 (epoch 0.9/4): 1.67 steps/s, 13 images/s, ETA 0:00:19, loss 0.5000",
      "step 12/40 (epoch 1.2/4): 1.50 steps/s, 12 images/s, ETA 0:00:19, loss 0.5000",
      "step 20/40 (epoch 2.0/4): 8.00 steps/s, 64 images/s, ETA 0:00:05, loss 0.5000"]
  off = progress.StepProgress(0, total=20, done=0, steps_per_epoch=10, batch_size=8,
                              log=lambda *a: lines.append(a))
  off.update(20, np.float32(0.5))
  assert len(lines) == 3
