"""Trainer command lines from config overrides, and configs parsed back from them.

Shared by ``launch.sweep`` and ``experiments.reproduce``: both write ``python -m lt_jax.main
--config=FILE[:ARGS] --workdir=DIR --config.k=v ...`` commands and parse each one back through
ml_collections' flag parsers exactly as the trainer will (``lt_jax.cli.parse_config``), so a typo
fails before anything runs. Config paths are relative to the repository root (``REPO_ROOT``).
"""

import json
import os
import pathlib
from typing import Any, Iterable, Sequence

import ml_collections

from lt_jax import cli
from lt_jax.cli import lookup  # defined once, in lt_jax.cli; launch.sweep uses commands.lookup

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


class CommandError(ValueError):
  """A config path, override or trainer argument that the trainer would not accept."""


def split_config_arg(config_arg: str) -> tuple[str, str]:
  """``'configs/x.py:smoke'`` -> (``'configs/x.py'``, ``'smoke'``)."""
  path, _, args = config_arg.partition(":")
  if not path:
    raise CommandError(f"empty config path in {config_arg!r}")
  return path, args


def resolve_config_path(path: str) -> tuple[pathlib.Path, str]:
  """Returns the file and the path to write into commands (repo-relative when inside the repo).

  Commands run from the repository root, so a relative path is looked up there first, then in the
  current directory.
  """
  candidates = [pathlib.Path(path)] if os.path.isabs(path) else [REPO_ROOT / path,
                                                                  pathlib.Path.cwd() / path]
  for candidate in candidates:
    if candidate.is_file():
      resolved = candidate.resolve()
      try:
        return resolved, resolved.relative_to(REPO_ROOT).as_posix()
      except ValueError:
        return resolved, str(resolved)
  raise CommandError(f"config file not found: {path} (looked in {REPO_ROOT} and {os.getcwd()})")


def trainer_command(args: Sequence[str], python: str = "python") -> list[str]:
  """``[python, "-m", "lt_jax.main", *args]``."""
  return [python, "-m", "lt_jax.main", *args]


def format_value(value: Any) -> str:
  """Formats an override the way ml_collections' flag parsers read it back.

  Tuples and lists become Python literals without spaces (``("block1","block2")``, parsed with
  ``ast.literal_eval``), booleans ``True`` / ``False``, floats their ``repr``, strings stay as they
  are. Shell quoting is separate (``shlex.join`` of the argv).
  """
  if isinstance(value, (tuple, list)):
    items = [format_literal(v) for v in value]
    return "(" + ",".join(items) + ("," if len(items) == 1 else "") + ")"
  if isinstance(value, str):
    return value
  return format_literal(value)


def format_literal(value: Any) -> str:
  """A Python literal ``ast.literal_eval`` reads back: strings double-quoted, tuples unspaced."""
  if isinstance(value, (tuple, list)):
    return format_value(tuple(value))
  if isinstance(value, str):
    return json.dumps(value)  # a valid Python literal too; double quotes read better in a shell
  if isinstance(value, (bool, int, float)) or value is None:
    return repr(value)
  raise CommandError(f"cannot pass {value!r} ({type(value).__name__}) on the command line")


def override_flags(overrides: dict[str, Any]) -> list[str]:
  """``{"mfm.points": ("block1",)}`` -> ``['--config.mfm.points=("block1",)']`` (argv, unquoted)."""
  return [f"--config.{key}={format_value(value)}" for key, value in overrides.items()]


def get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of the dotted ``key`` (which must exist)."""
  parent, last = lookup(config, key)
  return parent[last]


def check_override(config, key: str, value: Any, where: str):
  """Sets ``key`` in ``config``; CommandError when it is no field or ``value`` does not fit it."""
  found = lookup(config, key)
  if found is None:
    raise CommandError(f"{where}: unknown config field {key!r}")
  parent, last = found
  if isinstance(parent[last], ml_collections.ConfigDict):
    raise CommandError(f"{where}: {key!r} is a group of fields; override its fields one by one")
  try:
    parent[last] = value  # ConfigDict's type safety: e.g. a string into a bool field fails here
  except (TypeError, ValueError) as e:
    raise CommandError(f"{where}: value {value!r} does not fit field {key!r}: {e}") from None
  format_value(value)  # raises for values with no command-line form


def parse_config_flags(config_arg: str, args: Iterable[str]) -> ml_collections.ConfigDict:
  """Parses ``--config=config_arg`` plus ``--config.*`` args the way lt_jax.main does; the config.

  Arguments that are not ``--config.*`` / ``--noconfig.*`` flags are ignored. Raises CommandError
  with the loader's or the flag parser's message when one does not parse.
  """
  config_args = [a for a in args if a.startswith(("--config.", "--noconfig."))]
  try:
    return cli.parse_config(config_arg, config_args)
  except cli.ConfigError as e:
    raise CommandError(f"the trainer would reject --config={config_arg} {config_args}: {e}") from None
