"""Crash safety: a stop signal checkpoints and exits 75 and the rerun equals an uninterrupted run;
a damaged checkpoint is named and the one before it resumed; one writer per workdir (the lock); bad
workdirs named before any data is read."""

import errno
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from configs import ce_cifar
from configs import crt_cifar
from conftest import CE_SMOKE, REPO, finish_cli, run_outputs, start_cli, train_command
from lt_jax import checkpointing
from lt_jax import files
from lt_jax import run

def start(workdir, env):
  return start_cli(CE_SMOKE, workdir, env)


@pytest.fixture
def live_pid():
  sleeper = subprocess.Popen(["sleep", "60"])
  yield sleeper.pid
  sleeper.kill()
  sleeper.wait()


def write_lock(folder, **owner):
  os.makedirs(folder, exist_ok=True)
  files.write_json_atomic(os.path.join(folder, files.LOCK_FILE),
                          {"host": socket.gethostname(), "started": "earlier", **owner})


def test_sigterm_checkpoints_exits_75_and_the_rerun_equals_an_uninterrupted_one(ce_straight, cli_env,
                                                                               tmp_path):
  workdir = str(tmp_path / "w")
  proc = start(workdir, cli_env)
  metrics = os.path.join(workdir, "metrics.jsonl")
  while proc.poll() is None and not (os.path.exists(metrics) and os.path.getsize(metrics)):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  rc, log = finish_cli(proc)
  assert rc == 75, log
  assert "preempted: stopped by a signal after epoch" in log
  assert 1 <= checkpointing.manager(workdir, 2).latest_step() < 8  # epochs of slack for the signal
  assert not os.path.exists(os.path.join(workdir, files.LOCK_FILE))
  rc, log = finish_cli(start(workdir, cli_env))
  assert rc == 0, log
  assert run_outputs(workdir) == run_outputs(ce_straight)


def test_a_given_phase1_workdir_is_only_read(ce_straight, tmp_path, live_pid):
  straight = ce_straight
  write_lock(straight, pid=live_pid)  # as if trained elsewhere
  snapshot = lambda: {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
                      for d, _, names in os.walk(straight) for n in names}
  before = snapshot()
  config = crt_cifar.get_config("smoke")
  config.decouple.phase1_workdir, config.train.plots = straight, False
  assert run.run(config, str(tmp_path))["final_top1_error"] >= 0
  assert snapshot() == before
  os.remove(os.path.join(straight, files.LOCK_FILE))


def test_lock_names_a_live_owner_and_takes_over_a_dead_ones(tmp_path, live_pid, caplog):
  write_lock(tmp_path, pid=live_pid)
  with pytest.raises(FileExistsError, match=rf"process {live_pid} on host .* since earlier.*"
                                            rf"delete {tmp_path}/\.lock"):
    with files.lock(str(tmp_path)):
      pass
  dead = subprocess.Popen(["true"])
  dead.wait()  # reaped: its pid names no process
  write_lock(tmp_path, pid=dead.pid)
  with caplog.at_level(logging.WARNING):
    with files.lock(str(tmp_path)) as path:
      assert files.read_json(path, "a lock")["pid"] == os.getpid()
  assert "no longer runs" in caplog.text
  assert not os.path.exists(path)


def test_lock_of_another_host_is_never_taken_over_and_an_error_releases_it(tmp_path):
  write_lock(tmp_path, host="elsewhere", pid=1)
  with pytest.raises(FileExistsError, match="another host: never taken over"):
    with files.lock(str(tmp_path)):
      pass
  os.remove(tmp_path / files.LOCK_FILE)
  with pytest.raises(RuntimeError, match="inside"):
    with files.lock(str(tmp_path)):
      raise RuntimeError("inside")
  assert not os.path.exists(tmp_path / files.LOCK_FILE)


def test_second_writer_is_refused_before_writing(tmp_path, live_pid):
  write_lock(tmp_path, pid=live_pid)
  with pytest.raises(FileExistsError, match=f"process {live_pid}"):
    run.run(ce_cifar.get_config("smoke"), str(tmp_path))
  assert os.listdir(tmp_path) == [files.LOCK_FILE]


def test_workdir_that_is_a_file_is_named_by_the_cli(tmp_path):
  workdir = tmp_path / "file"
  workdir.write_text("")
  result = subprocess.run(train_command(workdir, *CE_SMOKE), cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 1
  assert f"error: workdir {workdir}: {workdir} is a file; expected a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_workdir_is_named(tmp_path):
  (tmp_path / "ro").mkdir(0o500)
  with pytest.raises(PermissionError, match=f"{tmp_path}/ro is not writable"):
    run.run(ce_cifar.get_config("smoke"), str(tmp_path / "ro" / "w"))


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
  path = files.write_json_atomic(str(tmp_path / "a.json"), {"old": 1})

  def replace(*_):
    raise OSError("disk gone")

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(OSError, match="disk gone"):
    files.write_json_atomic(path, {"new": 2})
  assert files.read_json(path, "a") == {"old": 1} and os.listdir(tmp_path) == ["a.json"]


def test_a_full_disk_is_one_line_naming_the_path(tmp_path):
  """ENOSPC, EDQUOT, EROFS (main.DISK_ERRORS) end a run in one line naming the path; others are
  not swallowed."""
  from lt_jax import main  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "w" / "metrics.jsonl")
  for code in main.DISK_ERRORS:
    message = main.disk_error(OSError(code, os.strerror(code), path))
    assert message.startswith(f"error: [Errno {code}] {os.strerror(code)}: '{path}' (a full or "
                              "read-only disk") and "\n" not in message
  assert main.disk_error(OSError(errno.EIO, os.strerror(errno.EIO), path)) is None


def test_a_partial_metrics_line_left_by_a_kill_is_dropped_on_resume(tmp_path):
  from lt_jax import metric_writer  # pylint: disable=g-import-not-at-top
  (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "epoch": 1, "step": 5}\n'
                                          '{"kind": "eval", "epo')
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write("eval", 1, 5, {"top1_error": 50.0})
  writer.close()
  assert [r["epoch"] for r in metric_writer.read_records(str(tmp_path), "train")] == [1]
  assert metric_writer.read_records(str(tmp_path), "eval")[0]["top1_error"] == 50.0


def _array_files(step_dir):
  """The files holding a checkpoint's array bytes (orbax's OCDBT data folders ``.../d/``)."""
  return [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names
          if os.path.basename(d) == "d"]


def test_a_damaged_latest_checkpoint_is_named_and_the_run_resumes_from_the_one_before(
    ce_straight, cli_env, tmp_path):
  workdir = str(tmp_path / "w")
  shutil.copytree(ce_straight, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(ckpts)) == ["7", "8"]  # train.keep_checkpoints=2 of 8 epochs
  arrays = _array_files(os.path.join(ckpts, "8"))
  assert arrays
  rng = random.Random(15)
  for path in arrays:  # overwritten with random bytes of the same length (crash review k7)
    size = os.path.getsize(path)
    with open(path, "wb") as f:
      f.write(bytes(rng.randrange(256) for _ in range(size)))
  rc, log = finish_cli(start(workdir, cli_env))
  assert rc == 0, log
  assert f"the checkpoint {ckpts}/8 does not read back" in log
  assert f"moved the damaged checkpoint {ckpts}/8 aside to {ckpts}/8.damaged" in log
  assert "resuming from the checkpoint of epoch 7" in log
  assert sorted(os.listdir(ckpts)) == ["7", "8", "8.damaged"]  # epoch 8 trained and saved again
  assert run_outputs(workdir) == run_outputs(ce_straight)


def test_damaged_checkpoints_fall_back_and_are_moved_aside_only_when_writable(tmp_path):
  state = {"w": np.zeros(4, np.float32)}
  mngr = checkpointing.manager(str(tmp_path), 4)
  for epoch in (1, 2, 3):
    checkpointing.save(mngr, {"w": np.full(4, epoch, np.float32)}, epoch)
  ckpts = tmp_path / "checkpoints"
  os.remove(ckpts / "3" / "default" / "_METADATA")  # crash review k9
  os.makedirs(ckpts / "4")  # an empty step folder (k8)
  reader = checkpointing.manager(str(tmp_path), 4, read_only=True)
  restored, epoch = checkpointing.restore_latest(reader, state)
  assert epoch == 2 and restored["w"].tolist() == [2.0] * 4
  assert sorted(os.listdir(ckpts)) == ["1", "2", "3", "4"]  # a reader leaves them in place
  (ckpts / "4.damaged").mkdir()  # taken by an earlier fallback
  mngr = checkpointing.manager(str(tmp_path), 4)
  restored, epoch = checkpointing.restore_latest(mngr, state)
  assert epoch == 2 and sorted(mngr.all_steps()) == [1, 2]
  assert sorted(os.listdir(ckpts)) == ["1", "2", "3.damaged", "4.damaged", "4.damaged.2"]
  checkpointing.save(mngr, {"w": np.full(4, 3, np.float32)}, 3)  # no collision with the damaged
  assert checkpointing.restore_latest(checkpointing.manager(str(tmp_path), 4), state)[1] == 3
  for step in ("1", "2", "3"):  # every checkpoint damaged: one line naming the folder
    os.remove(ckpts / step / "default" / "_METADATA")
  before = sorted(os.listdir(ckpts))
  with pytest.raises(checkpointing.DamagedCheckpointError) as error:
    checkpointing.restore_latest(checkpointing.manager(str(tmp_path), 4), state)
  message = str(error.value)  # a ValueError: lt_jax.main prints "error: <message>", no traceback
  assert isinstance(error.value, ValueError) and "\n" not in message
  assert message.startswith(f"no checkpoint in {ckpts} reads back (epochs 3, 2, 1; epoch 3: "
                            "FileNotFoundError: Metadata file (named _METADATA) does not exist")
  assert message.endswith("to start over, run with a new --workdir (the damaged checkpoints are "
                          "left as they are)")
  assert sorted(os.listdir(ckpts)) == before  # nothing moved when none reads
