"""Launch tools without training: sweep commands, their flag parsing, and the shell scripts."""

import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time

from absl import flags
import pytest

from launch import commands
from launch import sweep
from lt_jax import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ("launch/run_on_host.sh", "launch/tpu_pod.sh", "launch/slurm.sbatch")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
# ml_collections' config loader uses importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def parse_trainer_args(args):
  """Parses trainer flags as lt_jax.main does (lt_jax.cli's config flag + --workdir); the FlagValues."""
  flag_values = flags.FlagValues()
  argv = cli.define_config_flag(["lt_jax.main", *args], flag_values)
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  flags.DEFINE_bool("distributed", None, "", flag_values=flag_values)
  assert flag_values(argv) == ["lt_jax.main"]
  return flag_values


def get_field(config, key):
  for part in key.split("."):
    config = config[part]
  return config


def write_config(tmp_path, body):
  path = tmp_path / "cfg.py"
  path.write_text("from lt_jax_configs import default\n\n\ndef get_config(arg=''):\n"
                  "  return default.get_config(arg)\n\n\n" + textwrap.dedent(body))
  return str(path)


def run_script(args, env=None, cwd=REPO, check=False):
  full_env = {k: v for k, v in os.environ.items()
              if not k.startswith(("SLURM_", "JAX_", "LT_JAX_", "OMPI_", "TPU_"))}
  full_env.update(env or {})
  return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, check=check)


@pytest.mark.parametrize("config,count", [("configs/mfm_cifar_dev.py", 6),
                                          ("configs/mfm_fmnist.py", 7)])
def test_sweep_commands_shape(config, count):
  commands = sweep.sweep_commands(config, "runs/sw", extra=["--config.seed=1"])
  assert len(commands) == count
  names = []
  for command in commands:
    assert command[:4] == ["python", "-m", "lt_jax.main", f"--config={config}"]
    workdir = command[4]
    assert workdir.startswith("--workdir=runs/sw/")
    names.append(workdir.split("/")[-1])
    assert command[-1] == "--config.seed=1"
  assert len(set(names)) == count
  assert all(SAFE_NAME.match(name) for name in names), names
  # Deterministic.
  assert commands == sweep.sweep_commands(config, "runs/sw", extra=["--config.seed=1"])


def test_sweep_row_names():
  names = [name for name, _ in sweep.sweep_rows("configs/mfm_cifar_dev.py")]
  assert names == ["mfm.points-block1", "mfm.points-block2", "mfm.points-block3",
                   "mfm.points-block1+block2+block3", "mfm.zero_beta-True", "mfm.unit_gamma-True"]
  assert sweep.row_name({"optim.lr": 0.05, "dataset.path": "/a b/c"}) == (
      "optim.lr-0.05__dataset.path-_a_b_c")
  assert sweep.row_name({}) == "base"
  long = sweep.row_name({"dataset.path": "x" * 500})
  assert len(long) <= 200 and SAFE_NAME.match(long)


@pytest.mark.parametrize("config", ["configs/mfm_cifar_dev.py", "configs/mfm_fmnist.py:smoke"])
def test_sweep_overrides_parse_back_through_config_flags(config):
  rows = sweep.sweep_rows(config)
  commands = sweep.sweep_commands(config, "/tmp/root", extra=["--config.optim.lr=0.05"])
  for (name, overrides), command in zip(rows, commands):
    # Through a shell and back, as the printed line would be run.
    assert shlex.split(shlex.join(command)) == command
    parsed = parse_trainer_args(command[3:])
    assert parsed.workdir == f"/tmp/root/{name}"
    assert parsed.config.optim.lr == 0.05
    for key, value in overrides.items():
      assert get_field(parsed.config, key) == value, (key, command)
    if config.endswith(":smoke"):
      assert parsed.config.dataset.source == "digits"


def test_shell_parses_printed_command_like_python():
  command = sweep.sweep_commands("configs/mfm_cifar_dev.py", "/tmp/r")[3]
  out = subprocess.run(["bash", "-c", "printf '%s\\n' " + shlex.join(command)],
                       capture_output=True, text=True, check=True).stdout
  assert out.splitlines() == command
  assert """--config.mfm.points=("block1","block2","block3")""" in command


def test_format_value_round_trips():
  assert commands.format_value(("block1",)) == '("block1",)'
  assert commands.format_value(("a", "b")) == '("a","b")'
  assert commands.format_value(True) == "True"
  assert commands.format_value(0.1) == "0.1"
  assert commands.format_value(1e-05) == "1e-05"
  assert commands.format_value((160, 180)) == "(160,180)"
  assert commands.format_value("it's") == "it's"


def test_values_of_several_types(tmp_path):
  path = write_config(tmp_path, """
      def sweep(add):
        add(**{"optim.lr": 1e-5, "optim.decay_epochs": (3,), "loss.name": "focal",
               "train.epochs": 7, "optim.nesterov": False, "augment.mean": (0.5, 0.25, 0.125)})
      """)
  (command,) = sweep.sweep_commands(path, "w")
  config = parse_trainer_args(command[3:]).config
  assert config.optim.lr == 1e-5 and config.optim.decay_epochs == (3,)
  assert config.loss.name == "focal" and config.train.epochs == 7
  assert config.optim.nesterov is False and config.augment.mean == (0.5, 0.25, 0.125)


def test_unknown_key_fails_naming_key_and_file(tmp_path):
  path = write_config(tmp_path, """
      def sweep(add):
        add(**{"mfm.points": ("block1",)})
        add(**{"mfm.pointz": ("block2",)})
      """)
  with pytest.raises(commands.CommandError, match=r"cfg\.py.*'mfm\.pointz'"):
    sweep.sweep_commands(path, "w")


def test_wrong_type_fails(tmp_path):
  path = write_config(tmp_path, """
      def sweep(add):
        add(**{"mfm.zero_beta": "yes"})
      """)
  with pytest.raises(commands.CommandError, match="mfm.zero_beta"):
    sweep.sweep_commands(path, "w")


def test_duplicate_rows_fail(tmp_path):
  path = write_config(tmp_path, """
      def sweep(add):
        add(**{"seed": 1})
        add(**{"seed": 1})
      """)
  with pytest.raises(commands.CommandError, match="same name"):
    sweep.sweep_commands(path, "w")


def test_config_without_sweep_fails():
  with pytest.raises(commands.CommandError, match="ce_cifar.py defines no sweep"):
    sweep.sweep_commands("configs/ce_cifar.py", "w")


def test_bad_extra_and_launcher_fail():
  with pytest.raises(commands.CommandError, match="'sed'"):
    sweep.sweep_commands("configs/mfm_fmnist.py", "w", extra=["--config.sed=1"])
  with pytest.raises(commands.CommandError, match="--workdir"):
    sweep.sweep_commands("configs/mfm_fmnist.py", "w", extra=["--workdir=x"])
  with pytest.raises(commands.CommandError, match="launcher"):
    sweep.sweep_commands("configs/mfm_fmnist.py", "w", launcher="k8s")


def test_launcher_wrappers():
  rows_files = {}
  slurm = sweep.sweep_commands("configs/mfm_fmnist.py", "/shared/r", launcher="slurm",
                               launcher_args=["--time=1:00:00"], rows_files=rows_files)
  (path, text), = rows_files.items()
  assert slurm == [["sbatch", "--time=1:00:00", "--array=0-6", "--job-name=lt_jax-mfm_fmnist",
                    "--output=%x-%A_%a.out", "launch/slurm.sbatch", f"--rows={path}"]]
  rows = [shlex.split(line) for line in text.splitlines()]  # what slurm.sbatch's eval sees
  assert len(rows) == 7 and rows[0][:2] == ["--config=configs/mfm_fmnist.py",
                                            "--workdir=/shared/r/mfm.points-conv1"]
  assert rows[0][2] == """--config.mfm.points=("conv1",)"""
  tpu = sweep.sweep_commands("configs/mfm_fmnist.py", "gs://b/r", launcher="tpu",
                             launcher_args=["--name=p"])
  assert tpu[0][:3] == ["launch/tpu_pod.sh", "--name=p", "--"]  # the first row installs
  assert all(argv[:4] == ["launch/tpu_pod.sh", "--name=p", "--skip-setup", "--"]
             for argv in tpu[1:])
  assert tpu[-1][5] == "--workdir=gs://b/r/mfm.unit_gamma-True"


def test_cli_dry_run_prints_one_command_per_line():
  result = run_script([sys.executable, "-m", "launch.sweep", "--config=configs/mfm_fmnist.py",
                       "--workdir_root=/tmp/x", "--extra=--config.seed=2", "--",
                       "--config.optim.lr=0.5"], check=True)
  lines = result.stdout.splitlines()
  assert len(lines) == 7
  assert all(shlex.split(line)[:3] == ["python", "-m", "lt_jax.main"] for line in lines)
  assert all(line.endswith("--config.seed=2 --config.optim.lr=0.5") for line in lines)


def test_cli_errors():
  result = run_script([sys.executable, "launch/sweep.py", "--config=configs/ce_cifar.py",
                       "--workdir_root=/tmp/x"])
  assert result.returncode != 0 and "defines no sweep" in result.stderr
  result = run_script([sys.executable, "launch/sweep.py", "--config=configs/mfm_fmnist.py"])
  assert result.returncode != 0 and "workdir_root" in result.stderr


def test_cli_run_stops_at_first_failure(tmp_path):
  fake = tmp_path / "fake_python"
  log = tmp_path / "log"
  fake.write_text(f"#!/bin/bash\necho \"$*\" >> {log}\n[[ \"$*\" != *block3* ]]\n")
  fake.chmod(0o755)
  result = run_script([sys.executable, "-m", "launch.sweep", "--config=configs/mfm_cifar_dev.py",
                       f"--workdir_root={tmp_path}/w", "--run", f"--python={fake}"])
  assert result.returncode == 1
  assert len(log.read_text().splitlines()) == 3  # block1, block2, block3 (failed); 3 not started
  assert "FAILED: command 3/6" in result.stdout and "mfm.points-block3" in result.stdout
  assert "3 not started" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_syntax(script):
  subprocess.run(["bash", "-n", script], cwd=REPO, check=True)
  assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


def test_tpu_pod_dry_run():
  result = run_script(["launch/tpu_pod.sh", "--dry-run", "--name=lt-pod", "--zone=us-central2-b",
                       "--type=v4-32", "--bucket=gs://bkt", "--config=configs/mfm_cifar.py",
                       "--workdir=runs/mfm", """--config.mfm.points=("block1","block2")""",
                       "--config.dataset.path=/data/it's here"], check=True)
  lines = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
  assert any("tpu-vm create lt-pod" in line and "--accelerator-type=v4-32" in line
             for line in lines)
  assert any("tpu-vm scp" in line and "--worker=all" in line for line in lines)
  ssh = [shlex.split(line) for line in lines if "tpu-vm ssh" in line]
  assert len(ssh) == 3 and [argv[7] for argv in ssh] == ["--worker=all"] * 2 + ["--worker=0"]
  setup = shlex.split(ssh[0][-1].removeprefix("--command="))
  assert setup[:2] == ["bash", "-c"] and "jax[tpu]" in setup[2]
  subprocess.run(["bash", "-n", "-c", setup[2]], check=True)  # the remote setup script parses
  for argv in ssh[1:]:
    subprocess.run(["bash", "-n", "-c", argv[-1].removeprefix("--command=")], check=True)
  assert "nohup setsid bash -c" in ssh[1][-1]  # detached: a dropped ssh leaves the run going


def test_tpu_run_is_detached_and_its_log_followed(tmp_path):
  """The worker commands of the dry run, run here: the start returns at once with the trainer
  flags intact (and starts nothing while the run goes), the follow prints the log and returns the
  run's exit status."""
  args = ["--config=configs/mfm_cifar.py", "--workdir=gs://bkt/runs/mfm",
          "--config.dataset.path=/data/it's here"]
  result = run_script(["launch/tpu_pod.sh", "--dry-run", "--name=p", "--zone=z", *args], check=True)
  ssh = [shlex.split(line[2:]) for line in result.stdout.splitlines() if "tpu-vm ssh" in line]
  start, follow = (argv[-1].removeprefix("--command=") for argv in ssh[1:])
  home = tmp_path / "home"
  (home / "lt_jax" / "launch").mkdir(parents=True)
  fake = home / "lt_jax" / "launch" / "run_on_host.sh"
  fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" >> "$HOME/args"; echo "epoch 1"; sleep 1\n'
                  "exit 75\n")
  fake.chmod(0o755)
  env = {"HOME": str(home)}
  assert run_script(["bash", "-c", start], env=env, cwd=tmp_path, check=True).stdout == ""
  again = run_script(["bash", "-c", start], env=env, cwd=tmp_path, check=True)  # while it runs
  assert "already running, not started again" in again.stderr
  for _ in range(100):  # the run ends; the follow then needs no poll of its own
    if list((home / "lt_jax_logs").glob("*.rc")):
      break
    time.sleep(0.05)
  followed = run_script(["bash", "-c", follow], env=env, cwd=tmp_path)
  assert followed.returncode == 75 and "epoch 1" in followed.stdout
  assert (home / "args").read_text().splitlines() == args


def test_tpu_pod_real_path_with_fake_gcloud(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.log"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!/bin/bash
      printf '%s\\n' "$*" >> {log}
      [[ "$4" == describe ]] && exit 1
      [[ "$4" == scp ]] && cp "$5" {tmp_path}/code.tar.gz
      exit 0
      """))
  gcloud.chmod(0o755)
  env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TPU_NAME": "p", "TPU_ZONE": "z"}
  result = run_script(["launch/tpu_pod.sh", "--config=configs/ce_cifar.py", "--workdir=gs://b/r"],
                      env=env)
  assert result.returncode == 0, result.stderr
  calls = log.read_text().splitlines()
  assert [c.split()[3] for c in calls] == ["describe", "create", "scp", "ssh", "ssh", "ssh"]
  assert "LT_JAX_DISTRIBUTED=0" in calls[-2]  # v4-8: one host
  listing = subprocess.run(["tar", "-tzf", tmp_path / "code.tar.gz"], capture_output=True,
                           text=True, check=True).stdout.split()
  assert "./launch/run_on_host.sh" in listing and "./pyproject.toml" in listing
  assert not any(name.startswith("./.git/") for name in listing)


def test_tpu_pod_missing_arguments():
  result = run_script(["launch/tpu_pod.sh", "--dry-run", "--zone=z", "--config=c", "--workdir=w"])
  assert result.returncode == 2 and "--name" in result.stderr
  result = run_script(["launch/tpu_pod.sh", "--dry-run", "--name=p", "--zone=z", "--workdir=w"])
  assert result.returncode == 2 and "--config" in result.stderr
  result = run_script(["launch/tpu_pod.sh", "--dry-run", "--name=p", "--zone=z", "--type=v4-32",
                       "--config=c", "--workdir=w"])
  assert result.returncode == 2 and "gs://" in result.stderr
  assert "Usage" in run_script(["launch/tpu_pod.sh", "--help"], check=True).stdout


@pytest.fixture
def fake_python(tmp_path):
  fake = tmp_path / "python"
  fake.write_text("#!/bin/bash\necho \"cwd=$PWD dist=${LT_JAX_DISTRIBUTED-unset} args=$*\"\n")
  fake.chmod(0o755)
  return str(fake)


@pytest.mark.parametrize("env,dist", [({}, "unset"), ({"JAX_NUM_PROCESSES": "4"}, "1"),
                                      ({"SLURM_NTASKS": "2"}, "1"),
                                      ({"JAX_NUM_PROCESSES": "1"}, "unset"),
                                      ({"JAX_NUM_PROCESSES": "4", "LT_JAX_DISTRIBUTED": "0"},
                                       "unset"),
                                      ({"LT_JAX_DISTRIBUTED": "true"}, "1")])
def test_run_on_host(tmp_path, fake_python, env, dist):
  result = run_script([str(REPO / "launch/run_on_host.sh"), "--config=configs/ce_cifar.py",
                       "--workdir=w"], env={"LT_JAX_PYTHON": fake_python, **env}, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (f"cwd={REPO} dist={dist} args=-m lt_jax.main "
                                   "--config=configs/ce_cifar.py --workdir=w")


def test_run_on_host_missing_arguments():
  result = run_script(["launch/run_on_host.sh"])
  assert result.returncode == 2 and "Usage" in result.stderr
  result = run_script(["launch/run_on_host.sh", "--config=c", "--config.seed=1"])
  assert result.returncode == 2 and "--workdir" in result.stderr
  result = run_script(["launch/run_on_host.sh", "--workdir=w", "--config.seed=1"])
  assert result.returncode == 2 and "--config" in result.stderr


def test_slurm_sbatch_runs_srun_with_cpus_per_task(tmp_path, fake_python):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  srun = bin_dir / "srun"
  srun.write_text(f"#!/bin/bash\necho \"$* SRUN_CPUS_PER_TASK=$SRUN_CPUS_PER_TASK\" > {tmp_path}/srun"
                  "\nwhile [[ $1 == --* ]]; do shift; done\nexec \"$@\"\n")
  srun.chmod(0o755)
  env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
         "SLURM_JOB_ID": "7", "LT_JAX_PYTHON": fake_python, "SLURM_CPUS_PER_TASK": "6"}
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch"), "--config=configs/ce_cifar.py",
                       "--workdir=w"], env=env, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (f"cwd={REPO} dist=unset args=-m lt_jax.main "
                                   "--config=configs/ce_cifar.py --workdir=w")  # one task
  assert (tmp_path / "srun").read_text().startswith("--kill-on-bad-exit=1 --cpus-per-task=6 ")
  assert (tmp_path / "srun").read_text().strip().endswith("SRUN_CPUS_PER_TASK=6")
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch"), "--config=c", "--workdir=w"],
                      env={**env, "SLURM_STEP_NUM_TASKS": "16"}, cwd=tmp_path)
  assert "dist=1" in result.stdout  # several tasks: jax.distributed
  rows = tmp_path / "rows"
  rows.write_text("--config=a --workdir=w0\n--config=b '--workdir=w 1' '--config.x=(\"p\",)'\n")
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch"), f"--rows={rows}"],
                      env={**env, "SLURM_ARRAY_TASK_ID": "1"}, cwd=tmp_path)
  assert result.stdout.strip() == (f"cwd={REPO} dist=unset args=-m lt_jax.main --config=b "
                                   """--workdir=w 1 --config.x=("p",)""")
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch"), f"--rows={rows}"],
                      env={**env, "SLURM_ARRAY_TASK_ID": "2"}, cwd=tmp_path)
  assert result.returncode == 2 and "has no row 2" in result.stderr
  dry = run_script(["bash", str(REPO / "launch/slurm.sbatch"), "--dry-run", "--config=c",
                    "--workdir=w"], env={**env, "SLURM_CPUS_PER_TASK": ""}, cwd=tmp_path)
  assert dry.stdout == ("+ srun --kill-on-bad-exit=1 --cpus-per-task=8 launch/run_on_host.sh "
                        "--config=c --workdir=w\n")
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch")], env=env, cwd=tmp_path)
  assert result.returncode == 2 and "missing" in result.stderr
  text = (REPO / "launch/slurm.sbatch").read_text()
  assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@" in text
  assert "#SBATCH --gpus-per-node=1" in text  # defaults for one CIFAR run


def test_time_limit_signal_stops_the_trainer_and_requeues(tmp_path):
  """SIGUSR1 to the batch script (--signal=B:USR1@...) -> SIGTERM to the tasks -> the trainer's
  checkpoint-and-exit-75 -> scontrol requeue."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, body in (("srun", 'while [[ $1 == --* ]]; do shift; done\nexec "$@"'),
                     ("scancel", f'echo "$*" >> {tmp_path}/scancel; exit 1'),  # kill srun instead
                     ("scontrol", f'echo "$*" >> {tmp_path}/scontrol'),
                     ("python", f"trap 'exit 75' TERM; touch {tmp_path}/started\n"
                                "while true; do sleep 0.1; done")):
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / name).chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LT_JAX_"))}
  env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="7",
             LT_JAX_PYTHON=str(bin_dir / "python"))
  job = subprocess.Popen(["bash", str(REPO / "launch/slurm.sbatch"), "--config=c", "--workdir=w"],
                         cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
  for _ in range(200):
    if (tmp_path / "started").exists():
      break
    time.sleep(0.05)
  job.send_signal(signal.SIGUSR1)
  assert job.wait(timeout=30) == 75, job.stderr.read()
  assert (tmp_path / "scancel").read_text() == "--signal=TERM 7\n"
  assert (tmp_path / "scontrol").read_text() == "requeue 7\n"
  assert "time limit near" in job.stderr.read()


def test_exit_status_75_means_requeue(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, body in (("srun", 'while [[ $1 == --* ]]; do shift; done\nexec "$@"'),
                     ("scontrol", f'echo "$*" >> {tmp_path}/scontrol'), ("python", "exit 75")):
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / name).chmod(0o755)
  env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
         "SLURM_JOB_ID": "7", "LT_JAX_PYTHON": str(bin_dir / "python")}
  result = run_script(["bash", str(REPO / "launch/slurm.sbatch"), "--config=c", "--workdir=w"],
                      env=env, cwd=tmp_path)
  assert result.returncode == 75 and (tmp_path / "scontrol").read_text() == "requeue 7\n"
  result = run_script([sys.executable, "-m", "launch.sweep", "--config=configs/mfm_cifar_dev.py",
                       f"--workdir_root={tmp_path}/w", "--run", f"--python={bin_dir}/python"])
  assert result.returncode == 75
  assert "PREEMPTED: command 1/6 (exit status 75); 5 not started; re-run to resume" in result.stdout
