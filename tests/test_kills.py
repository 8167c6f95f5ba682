"""Kill tests: a CLI run SIGKILLed at a seeded moment (one during a checkpoint write), then run again
with the same command, ends with the ``summary.json`` and per-epoch metric records of an
uninterrupted run: in memory with replicas, streamed, two-phase (a kill in phase I and one in phase
II); a streamed epoch stopped by SIGTERM between steps resumes at that step.

The moments come from ``LT_JAX_KILL_SEED`` (default 15): re-run with other seeds, e.g.
``LT_JAX_KILL_SEED=7 python -m pytest -p no:xdist tests/test_kills.py``.
"""

import os
import random
import re
import signal
import time

import pytest

from conftest import finish_cli, run_outputs, start_cli

SEED = int(os.environ.get("LT_JAX_KILL_SEED", "15"))
TMP_CHECKPOINT = re.compile(r"(\d+)\.orbax-checkpoint-tmp")
REPLICAS = ("--config=configs/ce_cifar.py:smoke", "--config.replicas=2", "--config.train.epochs=2",
            "--config.train.plots=False", "--config.model.width=2")
STREAMED = ("--config=configs/ce_imagenet_lt.py:smoke", "--config.loader.stream=True",
            "--config.loader.workers=0", "--config.dataset.image_size=16",
            "--config.model.name=resnet8", "--config.model.width=2",
            "--config.train.batch_size=64", "--config.train.eval_batch_size=32",  # 5 steps / epoch
            "--config.train.epochs=2", "--config.train.plots=False",
            "--config.train.log_every_steps=1")
TWO_PHASE = ("--config=configs/crt_cifar.py:smoke", "--config.train.plots=False",
             "--config.model.width=2", "--config.train.epochs=2", "--config.decouple.steps=20",
             "--config.decouple.eval_every=10")  # phase I: 2 epochs; phase II: 2 rounds of 10 steps


def moments(case: str) -> random.Random:
  return random.Random(f"{SEED}/{case}")


def lines(path) -> int:
  """Complete lines in ``path`` (0 while it does not exist)."""
  try:
    with open(path) as f:
      return f.read().count("\n")
  except FileNotFoundError:
    return 0


def writing_checkpoint(folder, at_least: int) -> bool:
  """Whether orbax is writing a checkpoint of step >= ``at_least`` in ``folder``."""
  try:
    names = os.listdir(folder)
  except FileNotFoundError:
    return False
  return any((m := TMP_CHECKPOINT.match(n)) and int(m.group(1)) >= at_least for n in names)


def interrupt(proc, log, when, what: str, delay: float = 0.0, sig=signal.SIGKILL) -> str:
  """Sends ``sig`` to ``proc`` ``delay`` s after ``when()`` holds (polled every 2 ms); returns the
  log. Fails when the run ends before (the moment must fall inside the run)."""
  while not when():
    if proc.poll() is not None:
      pytest.fail(f"the run ended before {what} (LT_JAX_KILL_SEED={SEED}):\n{open(log).read()}")
    time.sleep(0.002)
  time.sleep(delay)
  assert proc.poll() is None, f"the run ended before {what} + {delay:.3f} s (LT_JAX_KILL_SEED={SEED})"
  proc.send_signal(sig)
  return finish_cli(proc, log)[1]


def rerun(args, workdir, env, log) -> str:
  rc, out = finish_cli(start_cli(args, workdir, env, log), log)
  assert rc == 0, out
  return out


def reference(args, factory, env) -> dict:
  workdir = str(factory.mktemp("reference"))
  rerun(args, workdir, env, os.path.join(workdir, "log.txt"))
  return run_outputs(workdir)


@pytest.fixture(scope="module")
def replicas_reference(tmp_path_factory, cli_env):
  return reference(REPLICAS, tmp_path_factory, cli_env)


@pytest.fixture(scope="module")
def streamed_reference(tmp_path_factory, cli_env):
  return reference(STREAMED, tmp_path_factory, cli_env)


@pytest.fixture(scope="module")
def two_phase_reference(tmp_path_factory, cli_env):
  return reference(TWO_PHASE, tmp_path_factory, cli_env)


def test_kill_during_a_checkpoint_write_with_replicas(replicas_reference, cli_env, tmp_path):
  """In memory, replicas=2, 2 epochs: SIGKILL while orbax writes the checkpoint of epoch 1 or 2
  (the last: the rerun resumes from epoch 1)."""
  workdir, log = tmp_path / "w", str(tmp_path / "log.txt")
  epoch = moments("replicas").randint(1, 2)
  proc = start_cli(REPLICAS, workdir, cli_env, log)
  interrupt(proc, log, lambda: writing_checkpoint(workdir / "checkpoints", epoch),
            f"the checkpoint write of epoch {epoch}")
  left = os.listdir(workdir / "checkpoints")
  assert any(TMP_CHECKPOINT.match(n) for n in left), left  # killed inside the write
  assert not (workdir / "summary.json").exists()
  rerun(REPLICAS, workdir, cli_env, log)
  assert run_outputs(workdir) == replicas_reference
  assert set(replicas_reference) == {"summary.json", "replica0/metrics.jsonl",
                                     "replica1/metrics.jsonl"}


def test_streamed_kill_then_sigterm_between_steps(streamed_reference, cli_env, tmp_path):
  """Streamed (5 steps an epoch, 2 epochs): SIGKILL 0-50 ms after the progress line of step 5..9;
  the rerun gets SIGTERM at step 6 or 7 (epoch 2): it checkpoints inside the epoch and exits 75;
  the next rerun resumes at that step. Both end as the uninterrupted run."""
  workdir, log = tmp_path / "w", [str(tmp_path / f"log{i}.txt") for i in range(3)]
  rng = moments("streamed")
  step, delay, term_step = rng.randint(5, 9), rng.uniform(0, 0.05), rng.randint(6, 7)
  at_step = lambda n, path: lambda: f"step {n}/10 " in open(path).read()
  proc = start_cli(STREAMED, workdir, cli_env, log[0])
  interrupt(proc, log[0], at_step(step, log[0]), f"step {step}", delay)
  assert not (workdir / "summary.json").exists()

  proc = start_cli(STREAMED, workdir, cli_env, log[1])
  out = interrupt(proc, log[1], at_step(term_step, log[1]), f"step {term_step}", sig=signal.SIGTERM)
  assert proc.returncode == 75, out
  stopped = re.search(r"preempted: stopped by a signal after step (\d) of 5 in epoch 2; "
                      r"checkpointed in (\S+)/checkpoint_in_epoch/(\d+):", out)
  assert stopped, out
  done = int(stopped.group(1))
  assert 1 <= done < 5 and int(stopped.group(3)) == 5 + done
  assert os.listdir(workdir / "checkpoints") == ["1"]  # epoch 2's position: checkpoint_in_epoch

  out = rerun(STREAMED, workdir, cli_env, log[2])
  assert f"resumed at step {done} of epoch 2" in out
  assert run_outputs(workdir) == streamed_reference
  assert not os.listdir(workdir / "checkpoint_in_epoch")  # superseded by the epoch-2 checkpoint


def test_kills_in_phase_one_and_phase_two(two_phase_reference, cli_env, tmp_path):
  """cRT: SIGKILL in phase I (0-50 ms after one of its first 3 records), then in phase II (during
  the checkpoint write of round 1, or just after its first record)."""
  workdir, log = tmp_path / "w", str(tmp_path / "log.txt")
  rng = moments("two_phase")
  record, delay, in_write = rng.randint(1, 3), rng.uniform(0, 0.05), rng.random() < 0.5
  proc = start_cli(TWO_PHASE, workdir, cli_env, log)
  interrupt(proc, log, lambda: lines(workdir / "phase1" / "metrics.jsonl") >= record,
            f"phase-I record {record}", delay)
  assert not (workdir / "phase1" / "summary.json").exists()
  proc = start_cli(TWO_PHASE, workdir, cli_env, log)
  if in_write:
    interrupt(proc, log, lambda: writing_checkpoint(workdir / "checkpoints", 1),
              "the checkpoint write of round 1")
  else:
    interrupt(proc, log, lambda: lines(workdir / "metrics.jsonl") >= 1, "phase-II record 1",
              delay / 2)
  assert (workdir / "phase1" / "summary.json").exists() and not (workdir / "summary.json").exists()
  rerun(TWO_PHASE, workdir, cli_env, log)
  assert run_outputs(workdir) == two_phase_reference
  assert set(two_phase_reference) == {"summary.json", "metrics.jsonl", "phase1/summary.json",
                                      "phase1/metrics.jsonl"}
