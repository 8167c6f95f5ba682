"""Turns a config file's ``sweep(add)`` into one trainer command per row, and prints or runs them.

A config file may define ``sweep(add)``, calling ``add(**{"mfm.points": ("block1",)})`` once per row
(one run). Each row becomes::

  python -m lt_jax.main --config=FILE[:ARGS] --workdir=ROOT/ROW_NAME --config.k=v ... EXTRA...

where ROW_NAME is derived from the overrides (``mfm.points=("block1",)`` -> ``mfm.points-block1``).
Every override key is checked against the config and every command is parsed back through
ml_collections' flag parsers (``lt_jax.cli``) before anything is printed or launched, so a typo fails first.

Usage (from the repository root)::

  python -m launch.sweep --config=configs/mfm_cifar_dev.py --workdir_root=runs/mfm_t2   # print
  python -m launch.sweep --config=configs/mfm_cifar_dev.py:smoke --workdir_root=/tmp/s --run
  python -m launch.sweep --config=configs/mfm_fmnist.py --workdir_root=/shared/t6 \
      --launcher=slurm --launcher_args=--time=4:00:00 --extra=--config.seed=1 --run  # job array
  python -m launch.sweep ... --launcher=tpu --workdir_root=gs://BUCKET/sweeps/t2 \
      --launcher_args=--name=my-pod --launcher_args=--zone=us-central2-b --run

Arguments after ``--`` are appended to every command like ``--extra``. Re-running a sweep resumes
every row from its latest checkpoint (finished rows end at once). ``--launcher=slurm`` submits one
job array (``sbatch --array=0-N-1 launch/slurm.sbatch --rows=.sweeps/FILE``), its rows' trainer
arguments in ``.sweeps/`` under the repository root (written with ``--run``; the dry run prints
them). ``--launcher=tpu`` runs the rows in turn on one TPU VM, copying and installing only for the
first.
"""

import copy
import hashlib
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any, Sequence

from absl import app
from absl import flags

if not __package__:  # python launch/sweep.py
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from launch import commands  # pylint: disable=g-import-not-at-top
from lt_jax import cli  # pylint: disable=g-import-not-at-top

LAUNCHERS = ("local", "slurm", "tpu")
SLURM_SCRIPT = "launch/slurm.sbatch"
ROWS_DIR = ".sweeps"  # job-array rows, under the repository root (where sbatch runs)
TPU_SCRIPT = "launch/tpu_pod.sh"
_MAX_NAME = 200  # well under the usual 255-byte file name limit
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _name_part(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "+".join(_name_part(v) for v in value) if value else "empty"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def row_name(overrides: dict[str, Any]) -> str:
  """Deterministic, file-system-safe name: ``{"mfm.points": ("b1", "b2")}`` -> ``mfm.points-b1+b2``.

  Overrides are joined by ``__`` in the order given; characters outside ``[A-Za-z0-9._+-]`` become
  ``_``; names longer than 200 characters are cut and end in a hash of the full name.
  """
  if not overrides:
    return "base"
  name = "__".join(f"{key}-{_name_part(value)}" for key, value in overrides.items())
  name = _UNSAFE.sub("_", name)
  if name.startswith(("-", ".")):
    name = "_" + name
  if len(name) > _MAX_NAME:
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = name[:_MAX_NAME - 11] + "-" + digest
  return name


def sweep_rows(config_path: str) -> list[tuple[str, dict[str, Any]]]:
  """(row name, overrides) for each ``add`` call of the config file's ``sweep``, validated."""
  path, args = commands.split_config_arg(config_path)
  file, _ = commands.resolve_config_path(path)
  module = cli.config_module(file)
  sweep_fn = getattr(module, "sweep", None)
  if not callable(sweep_fn):
    raise commands.CommandError(f"{path} defines no sweep(add) function; nothing to sweep "
                                "(configs with one: " + ", ".join(_configs_with_sweep()) + ")")
  config = module.get_config(args) if args else module.get_config()
  rows = []
  sweep_fn(lambda **overrides: rows.append(dict(overrides)))
  if not rows:
    raise commands.CommandError(f"{path}: sweep() added no rows")
  named, seen = [], {}
  for i, overrides in enumerate(rows):
    scratch = copy.deepcopy(config)
    for key, value in overrides.items():
      commands.check_override(scratch, key, value, f"{path}, sweep row {i} ({overrides})")
    name = row_name(overrides)
    if name in seen:
      raise commands.CommandError(f"{path}: sweep rows {seen[name]} and {i} have the same name "
                                  f"{name!r} (same overrides?): {rows[seen[name]]} / {overrides}")
    seen[name] = i
    named.append((name, overrides))
  return named


def _configs_with_sweep() -> list[str]:
  found = []
  for file in sorted((commands.REPO_ROOT / "configs").glob("*.py")):
    if re.search(r"^def sweep\(", file.read_text(), re.M):
      found.append(f"configs/{file.name}")
  return found or ["none"]


def _check_extra(extra: Sequence[str], config, config_path: str):
  for arg in extra:
    if not arg.startswith("--"):
      raise commands.CommandError(f"extra argument {arg!r} is not a --flag")
    flag = arg[2:].split("=", 1)[0]
    if flag in ("config", "workdir"):
      raise commands.CommandError(f"extra argument {arg!r}: the sweep sets --config and --workdir "
                                  "itself")
    for prefix in ("config.", "noconfig."):
      if flag.startswith(prefix) and commands.lookup(config, flag[len(prefix):]) is None:
        raise commands.CommandError(f"extra argument {arg!r}: unknown config field "
                                    f"{flag[len(prefix):]!r} in {config_path}")


def _join_root(root: str, name: str) -> str:
  return f"{root.rstrip('/')}/{name}" if root.rstrip("/") else f"/{name}"


def sweep_commands(config_path: str, workdir_root: str, extra: Sequence[str] = (),
                   launcher: str = "local", launcher_args: Sequence[str] = (),
                   python: str = "python", rows_files: dict | None = None) -> list[list[str]]:
  """One argv per sweep row of ``config_path`` (``'configs/x.py'`` or ``'configs/x.py:smoke'``).

  Args:
    config_path: config file, relative to the repository root (or the current directory), with
      optional ``:args``.
    workdir_root: each row runs in ``workdir_root/<row name>`` (a local path or gs://...).
    extra: arguments appended to every trainer command, e.g. ``('--config.seed=1',)``.
    launcher: ``local`` (``python -m lt_jax.main ...``), ``slurm`` (one job array: ``sbatch
      [launcher_args] --array=0-N-1 ... launch/slurm.sbatch --rows=FILE``) or ``tpu``
      (``launch/tpu_pod.sh [launcher_args] [--skip-setup after the first row] -- ...``).
    launcher_args: options for sbatch / tpu_pod.sh (ignored by ``local``).
    python: the interpreter of local commands.
    rows_files: filled with {path under the repository root: text} of the files the commands
      need (the job array's rows), to write before running them.

  Returns:
    A list of argv lists (not shell-quoted: print them with ``shlex.join``).

  Raises:
    commands.CommandError: no sweep(), an unknown override key, a value the trainer would not
      parse, two rows with one name, or a bad extra argument.
  """
  if launcher not in LAUNCHERS:
    raise commands.CommandError(f"unknown launcher {launcher!r}; expected one of "
                                f"{', '.join(LAUNCHERS)}")
  if not workdir_root:
    raise commands.CommandError("workdir_root is empty")
  path, args = commands.split_config_arg(config_path)
  file, command_path = commands.resolve_config_path(path)
  config_arg = command_path + (f":{args}" if args else "")
  parse_arg = str(file) + (f":{args}" if args else "")  # independent of the current directory
  rows = sweep_rows(config_path)
  base_config = commands.parse_config_flags(parse_arg, [])
  extra = list(extra)
  _check_extra(extra, base_config, path)
  argvs, trainer_rows = [], []
  for name, overrides in rows:
    trainer_args = [f"--config={config_arg}", f"--workdir={_join_root(workdir_root, name)}",
                    *commands.override_flags(overrides), *extra]
    parsed = commands.parse_config_flags(parse_arg, trainer_args)
    for key, value in overrides.items():
      got = commands.get(parsed, key)
      want = tuple(value) if isinstance(value, list) else value
      if got != want:
        raise commands.CommandError(f"{file.name}, row {name}: {key}={value!r} reads back as "
                                    f"{got!r}")
    trainer_rows.append(trainer_args)
    if launcher == "local":
      argvs.append(commands.trainer_command(trainer_args, python))
    elif launcher == "tpu":  # the first row copies the code and installs; the others reuse them
      argvs.append([TPU_SCRIPT, *launcher_args, *(["--skip-setup"] if argvs else []), "--",
                    *trainer_args])
  if launcher == "slurm":
    text = "".join(shlex.join(args) + "\n" for args in trainer_rows)
    path = f"{ROWS_DIR}/{file.stem}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.rows"
    if rows_files is not None:
      rows_files[path] = text
    argvs.append(["sbatch", *launcher_args, f"--array=0-{len(trainer_rows) - 1}",
                  f"--job-name=lt_jax-{file.stem}", "--output=%x-%A_%a.out", SLURM_SCRIPT,
                  f"--rows={path}"])
  return argvs


def run_commands(commands: Sequence[Sequence[str]], cwd: str | os.PathLike = commands.REPO_ROOT,
                 out=sys.stdout) -> int:
  """Runs commands one after another from ``cwd``; stops at the first failure. Exit status."""
  for i, command in enumerate(commands):
    print(f"[sweep {i + 1}/{len(commands)}] {shlex.join(command)}", file=out, flush=True)
    try:
      rc = subprocess.run(list(command), cwd=cwd, check=False).returncode
    except OSError as e:
      rc, why = 127, f"could not start: {e}"
    else:
      why = f"exit status {rc}"
    if rc == os.EX_TEMPFAIL:  # lt_jax.main: stopped by a signal after checkpointing
      print(f"[sweep] PREEMPTED: command {i + 1}/{len(commands)} (exit status 75); "
            f"{len(commands) - i - 1} not started; re-run to resume: {shlex.join(command)}",
            file=out, flush=True)
      return rc
    if rc != 0:
      print(f"[sweep] FAILED: command {i + 1}/{len(commands)} ({why}); "
            f"{len(commands) - i - 1} not started: {shlex.join(command)}", file=out, flush=True)
      return rc if 0 < rc < 256 else 1
  print(f"[sweep] all {len(commands)} commands succeeded", file=out, flush=True)
  return 0


_CONFIG = flags.DEFINE_string("config", None, "Config file with a sweep(add) function, "
                              "e.g. configs/mfm_cifar_dev.py or configs/mfm_cifar_dev.py:smoke.")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None,
                                    "Each row runs in WORKDIR_ROOT/<row name> (path or gs://...).")
_DRY_RUN = flags.DEFINE_bool("dry_run", True, "Print the commands, one per line (the default).")
_RUN = flags.DEFINE_bool("run", False, "Execute the commands one after another from the repo root, "
                         "stopping at the first failure (also: --nodry_run).")
_EXTRA = flags.DEFINE_multi_string("extra", [], "Argument appended to every trainer command, "
                                   "e.g. --extra=--config.seed=1 (repeatable; or after --).")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", LAUNCHERS,
                              "local: python -m lt_jax.main; slurm: sbatch launch/slurm.sbatch; "
                              "tpu: launch/tpu_pod.sh.")
_LAUNCHER_ARGS = flags.DEFINE_multi_string("launcher_args", [],
                                           "Option for sbatch or tpu_pod.sh, e.g. "
                                           "--launcher_args=--nodes=2 (repeatable).")
_PYTHON = flags.DEFINE_string("python", None, "Interpreter of local commands; default: 'python' "
                              "when printing, this interpreter (sys.executable) with --run.")
flags.mark_flags_as_required(["config", "workdir_root"])


def main(argv):
  execute = _RUN.value or not _DRY_RUN.value
  python = _PYTHON.value or (sys.executable if execute else "python")
  rows_files = {}
  try:
    argvs = sweep_commands(_CONFIG.value, _WORKDIR_ROOT.value, [*_EXTRA.value, *argv[1:]],
                           _LAUNCHER.value, _LAUNCHER_ARGS.value, python, rows_files)
  except commands.CommandError as e:
    sys.exit(f"sweep: error: {e}")
  if not execute:
    for path, text in rows_files.items():
      print(f"# {path} (written with --run), one row per array task:")
      print("".join(f"#   {i}: {line}\n" for i, line in enumerate(text.splitlines())), end="")
    for command in argvs:
      print(shlex.join(command))
    return 0
  for path, text in rows_files.items():
    (commands.REPO_ROOT / path).parent.mkdir(exist_ok=True)
    (commands.REPO_ROOT / path).write_text(text)
  sys.exit(run_commands(argvs))


if __name__ == "__main__":
  app.run(main)
