"""Shared test fixtures: tiny configs, contexts, states and batches for method steps."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

# XLA compiles are most of the suite's time. Before JAX starts: the CPU backend's LLVM optimisation
# off (the tiny programs compile faster and run about as fast), and one persistent compilation cache
# per test session, shared by the xdist workers and the CLI subprocesses they start (same program,
# same executable: a cache hit changes no number).
# The process that loads this first (pytest, or xdist's controller) sets them; its workers inherit.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lt_jax_tests_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import pytest

from lt_jax import methods
from lt_jax import train


def pytest_unconfigure(config):
  """The session's compilation cache goes with the session (removed by the process that made it)."""
  del config
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 1)


def tiny_config(config_module, **fields):
  """``config_module``'s :smoke config shrunk further; ``fields`` maps 'a.b' to values."""
  config = config_module.get_config("smoke")
  config.model.width = 2
  return set_fields(config, fields)


def set_fields(config, fields: dict):
  """``config`` with each 'a.b' of ``fields`` set to its value."""
  for name, value in fields.items():
    *path, last = name.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


def context(config, counts):
  """The run context of ``config`` on a training set with these per-class counts."""
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  return train.build_context(config, class_counts=np.asarray(counts), train_labels=labels)


def step_setup(config, counts=(24, 12, 6, 3), batch_size=6, meta_batch=4, seed=0,
               image_shape=IMAGE_SHAPE):
  """(ctx, method, state, batch) for a method step on random normalised images."""
  config.train.batch_size = batch_size
  ctx = context(config, counts)
  method = methods.get_method(config.method)
  state = train.init_state(config, ctx, method, image_shape)
  rng = np.random.default_rng(seed)
  batch = {
      "images": rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
      "labels": rng.integers(0, len(counts), batch_size).astype(np.int32),
      "ids": rng.choice(sum(counts), batch_size, replace=False).astype(np.int32),
      "meta_images": rng.normal(size=(meta_batch, *image_shape)).astype(np.float32),
      "meta_labels": np.arange(meta_batch, dtype=np.int32) % len(counts),
  }
  return ctx, method, state, jax.tree.map(jax.numpy.asarray, batch)


@pytest.fixture
def x64():
  """Float64 inside one test only."""
  with jax.enable_x64(True):
    yield


# --- lt_jax.main in subprocesses (crash-safety tests) ----------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CE_SMOKE = ("--config=configs/ce_cifar.py:smoke", "--config.train.epochs=8",
            "--config.train.plots=False", "--config.model.width=2")
TIME_FIELDS = ("epoch_seconds", "compiles", "images_per_second")  # wall clock, differ between runs
PATH_FIELDS = ("provenance", "phase1_workdir")  # summary fields naming this machine or workdir


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
  """The environment of ``lt_jax.main`` subprocesses: CPU, the session's compilation cache and XLA
  flags (above) with every compile cached (a reference run, a killed run and its resume compile
  once; the same environment for every run compared), miniatures in tmp."""
  return {**os.environ, "JAX_PLATFORMS": "cpu",
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
          "LT_JAX_MINIATURES": str(tmp_path_factory.mktemp("miniatures"))}


def train_command(workdir, *args) -> list[str]:
  return [sys.executable, "-m", "lt_jax.main", f"--workdir={workdir}", *args]


def start_cli(args, workdir, env, log_path=None) -> subprocess.Popen:
  """``lt_jax.main --workdir=workdir *args``; stdout and stderr to ``log_path`` (else piped)."""
  out = open(log_path, "a") if log_path else subprocess.PIPE
  return subprocess.Popen(train_command(workdir, *args), cwd=REPO, env=env, stdout=out,
                          stderr=subprocess.STDOUT, text=True)


def finish_cli(proc, log_path=None, timeout=300) -> tuple[int, str]:
  """(exit status, log) once ``proc`` ends."""
  out, _ = proc.communicate(timeout=timeout)
  if log_path:
    with open(log_path) as f:
      out = f.read()
  return proc.returncode, out


def run_outputs(workdir) -> dict:
  """Every ``summary.json`` (without ``PATH_FIELDS``) and ``metrics.jsonl`` (the last record per
  (kind, epoch), as readers keep it, without ``TIME_FIELDS``) under ``workdir``, by relative path."""
  out = {}
  for folder, _, names in os.walk(workdir):
    rel = os.path.relpath(folder, workdir)
    if "summary.json" in names:
      with open(os.path.join(folder, "summary.json")) as f:
        out[os.path.normpath(os.path.join(rel, "summary.json"))] = {
            k: v for k, v in json.load(f).items() if k not in PATH_FIELDS}
    if "metrics.jsonl" in names:
      records = {}
      with open(os.path.join(folder, "metrics.jsonl")) as f:
        for line in f:
          record = {k: v for k, v in json.loads(line).items() if k not in TIME_FIELDS}
          records[(record["kind"], record["epoch"])] = record
      out[os.path.normpath(os.path.join(rel, "metrics.jsonl"))] = records
  return out


@pytest.fixture(scope="session")
def ce_straight(tmp_path_factory, cli_env):
  """The workdir of an uninterrupted ``CE_SMOKE`` CLI run (8 epochs, in memory)."""
  workdir = str(tmp_path_factory.mktemp("ce_straight"))
  rc, log = finish_cli(start_cli(CE_SMOKE, workdir, cli_env))
  assert rc == 0, log
  return workdir
