"""What every lt_jax command shares before JAX starts: finding and loading config files, checking
``--config.*`` overrides, boolean environment variables, usage text and one-line errors.

Config files ship with the package as ``lt_jax_configs`` (the repository's ``configs/`` folder), so
``--config=mfm_cifar``, ``--config=mfm_cifar.py:smoke`` and ``--config=configs/mfm_cifar.py`` work
from any directory; a path to any other file works too. Shipped configs import each other
relatively (``from . import default``); a config of your own imports ``from lt_jax_configs import
default``. This module imports neither JAX nor lt_jax modules that do.
"""

import difflib
import importlib
import importlib.util
import os
import pathlib
import re
import sys
import types
from typing import Callable, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

CONFIG_PACKAGE = "lt_jax_configs"
_SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent  # the repository in a source checkout
_HELP = ("-h", "-help", "--help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ConfigError(ValueError):
  """A config name, file, argument or override field that does not exist or does not load."""


def env_flag(name: str, default: bool = False) -> bool:
  """A boolean environment variable: unset -> ``default``; 1/true/yes/on -> True; 0/false/no/off/''
  -> False (any case); anything else -> ValueError naming the variable."""
  value = os.environ.get(name)
  if value is None:
    return default
  if value.strip().lower() in _TRUE:
    return True
  if value.strip().lower() in _FALSE:
    return False
  raise ValueError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off")


# --- Config files ---------------------------------------------------------------------------------

def config_dir() -> pathlib.Path:
  """The folder of the shipped configs: the checkout's ``configs/`` (when lt_jax runs from its
  source tree) or the installed ``lt_jax_configs`` package."""
  source = _SOURCE_ROOT / "configs"
  if (_SOURCE_ROOT / "pyproject.toml").is_file() and (source / "default.py").is_file():
    return source
  spec = importlib.util.find_spec(CONFIG_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ConfigError(f"the shipped configs ({CONFIG_PACKAGE}) are not installed; reinstall lt_jax")
  return pathlib.Path(list(spec.submodule_search_locations)[0]).resolve()


def config_names() -> list[str]:
  """Names of the shipped configs (``--config=NAME``)."""
  return sorted(p.stem for p in config_dir().glob("*.py") if not p.stem.startswith("_"))


def split_spec(spec: str) -> tuple[str, str | None]:
  """``'x.py:smoke'`` -> (``'x.py'``, ``'smoke'``); ``'x'`` -> (``'x'``, None)."""
  path, colon, arg = spec.partition(":")
  if not path:
    raise ConfigError(f"--config={spec!r}: expected a config name or file, e.g. quickstart:smoke")
  return path, (arg if colon else None)


def resolve_config(spec: str, cwd: str | os.PathLike | None = None) -> tuple[pathlib.Path, str | None]:
  """(config file, argument) of ``--config=spec``.

  ``spec`` is ``PATH[:ARG]`` or ``NAME[:ARG]``: an existing file (relative to ``cwd``, default the
  current directory) is used as it is; otherwise a bare name, ``NAME.py`` or ``configs/NAME.py``
  names a shipped config. ConfigError names what was looked for, with the closest shipped names.
  """
  path, arg = split_spec(spec)
  given = pathlib.Path(path).expanduser()
  if not given.is_absolute():
    given = pathlib.Path(cwd or os.getcwd()) / given
  if given.is_file():
    return given.resolve(), arg
  parts = pathlib.PurePath(path).parts
  name = parts[-1].removesuffix(".py")
  shipped = config_dir()
  if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
    if (shipped / f"{name}.py").is_file() and name != "__init__":
      return shipped / f"{name}.py", arg
  close = difflib.get_close_matches(name, config_names(), n=3)
  hint = f"; did you mean {' or '.join(close)}?" if close else "; shipped configs: " + ", ".join(
      config_names())
  raise ConfigError(f"config file not found: {path} (no such file, and no shipped config "
                    f"{name!r} in {shipped}){hint}")


def _shipped_package() -> types.ModuleType:
  """The ``lt_jax_configs`` package, made from the source checkout's ``configs/`` when not installed
  (so a config of your own can ``from lt_jax_configs import default`` in either case)."""
  if CONFIG_PACKAGE in sys.modules:
    return sys.modules[CONFIG_PACKAGE]
  folder = config_dir()
  spec = importlib.util.spec_from_file_location(CONFIG_PACKAGE, folder / "__init__.py",
                                                submodule_search_locations=[str(folder)])
  package = importlib.util.module_from_spec(spec)
  sys.modules[CONFIG_PACKAGE] = package
  spec.loader.exec_module(package)
  return package


def config_module(file: str | os.PathLike) -> types.ModuleType:
  """The module of a config file: a shipped one as ``lt_jax_configs.NAME`` (relative imports work),
  any other under its own name."""
  file = pathlib.Path(file).resolve()
  package = _shipped_package()
  if file.parent == pathlib.Path(list(package.__path__)[0]).resolve():
    return importlib.import_module(f"{CONFIG_PACKAGE}.{file.stem}")
  name = "lt_jax_user_config_" + re.sub(r"\W", "_", str(file))
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[name]
      raise
  return sys.modules[name]


def load_config(spec: str, cwd: str | os.PathLike | None = None) -> ml_collections.ConfigDict:
  """``get_config(ARG)`` (or ``get_config()`` without ``:ARG``) of ``--config=spec``, as
  ml_collections' config flags call it. ConfigError when it cannot be found or loaded."""
  file, arg = resolve_config(spec, cwd)
  try:
    module = config_module(file)
  except ImportError as e:
    raise ConfigError(f"config file {file} does not import: {e}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {file} defines no get_config()")
  try:
    config = module.get_config() if arg is None else module.get_config(arg)
  except (ValueError, TypeError, KeyError) as e:
    raise ConfigError(f"--config={spec}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() of {file} returned a {type(config).__name__}, expected a "
                      "ml_collections.ConfigDict")
  return config


# --- Overrides ------------------------------------------------------------------------------------

def lookup(config: ml_collections.ConfigDict, key: str):
  """(parent ConfigDict, last field name) of a dotted key, or None when the key does not exist."""
  *path, last = key.split(".")
  node = config
  for part in path:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return None
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or last not in node:
    return None
  return node, last


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted field name of ``config`` (leaves, not groups)."""
  names = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      names.extend(field_names(value, f"{prefix}{key}."))
    else:
      names.append(prefix + key)
  return names


def override_fields(args: Sequence[str]) -> list[tuple[str, str]]:
  """(field, argument) of each ``--config.FIELD[=V]`` / ``--noconfig.FIELD`` argument."""
  found = []
  for arg in args:
    if arg == "--":
      break
    match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
    if match:
      found.append((match.group(1), arg))
  return found


def check_overrides(config: ml_collections.ConfigDict, args: Sequence[str]) -> None:
  """ConfigError naming the first ``--config.*`` override of a field ``config`` lacks, with the
  closest field names."""
  for key, arg in override_fields(args):
    if lookup(config, key) is None:
      close = difflib.get_close_matches(key, field_names(config), n=3)
      hint = f"; did you mean {' or '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config field {key!r} in {arg}{hint}")


# --- Running a command ----------------------------------------------------------------------------

def pop_flag(argv: list[str], name: str) -> tuple[str | None, list[str]]:
  """(value of the last ``--name=V`` / ``--name V``, argv without them)."""
  value, rest, i = None, [], 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--":
      rest.extend(argv[i:])
      break
    if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      value, i = argv[i + 1], i + 2
      continue
    if arg.startswith((f"--{name}=", f"-{name}=")):
      value = arg.split("=", 1)[1]
    else:
      rest.append(arg)
    i += 1
  return value, rest


def print_usage(usage: str, module_name: str, full: bool = False) -> None:
  """``usage`` and the flags of ``module_name`` (every flag with ``full``)."""
  text = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(module_name).partition("\n")[2]
  try:
    print(usage.strip() + "\n\nflags (--helpfull: all):\n" + text.rstrip("\n"), flush=True)
  except BrokenPipeError:  # e.g. | head
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """absl's flag parsing with a one-line ``error: ...`` (exit 1) instead of a usage dump."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}")


_loaded: dict[str, ml_collections.ConfigDict] = {}


def loaded_config(spec: str) -> ml_collections.ConfigDict:
  """The config ``define_config_flag`` just loaded for ``spec`` (once), else ``load_config(spec)``."""
  config = _loaded.pop(spec, None)
  return load_config(spec) if config is None else config


def define_config_flag(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Checks ``argv``'s ``--config`` (it loads; every ``--config.*`` field exists) and defines the
  ``config`` flag (ml_collections' config file flag, locked; absl applies the overrides when it
  parses); the argv to parse. ConfigError when the config is missing, does not load or lacks an
  overridden field."""
  spec, rest = pop_flag(list(argv), "config")
  if spec is None:
    raise ConfigError("--config is required, e.g. --config=quickstart or --config=ce_cifar:smoke "
                      "(shipped configs: " + ", ".join(config_names()) + ")")
  config = load_config(spec)
  check_overrides(config, rest)
  file, arg = resolve_config(spec)
  resolved = str(file) + ("" if arg is None else f":{arg}")
  _loaded[resolved] = config  # handed to config_by_name once: get_config runs once per parse
  by_name = pathlib.Path(__file__).with_name("config_by_name.py")
  argv = [*rest[:1], f"--config={by_name}:{resolved}", *rest[1:]]
  config_flags.DEFINE_config_file("config", None, "The config: --config=NAME|FILE[:ARG].",
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  return argv


def parse_config(spec: str, args: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of ``--config=spec`` with the ``--config.*`` overrides among ``args`` applied by
  ml_collections' flag parsers, as every lt_jax command reads them (other arguments are ignored).
  ConfigError naming what does not parse."""
  flag_values = flags.FlagValues()
  argv = define_config_flag(["lt_jax", f"--config={spec}", *(arg for _, arg in override_fields(args))],
                            flag_values)
  try:
    flag_values(argv)
  except flags.Error as e:
    raise ConfigError(str(e)) from None
  return flag_values.config


def exit_on_help(usage: str, module_name: str, argv: Sequence[str]) -> None:
  """``--help`` (``--helpfull``) among ``argv``: print ``usage`` and the flags, exit 0."""
  if any(arg in _HELP for arg in argv[1:]):
    print_usage(usage, module_name, full=any("helpfull" in arg for arg in argv[1:]))
    sys.exit(0)


def run_command(main: Callable[[list[str]], None], usage: str, flags_parser=None) -> None:
  """``app.run(main)`` for a command without ``--config`` (evaluate, predict, export): ``--help``
  prints ``usage`` (the module's docstring) and its flags; a flag error is one ``error:`` line."""
  exit_on_help(usage, main.__module__, sys.argv)
  app.run(main, flags_parser=flags_parser or parse_flags_or_exit)


def run_with_config(main: Callable[[list[str]], None], usage: str,
                    argv: Sequence[str] | None = None) -> None:
  """Runs an absl ``main`` whose ``--config`` is a config name or file (see ``resolve_config``).

  Before anything heavy is imported: ``--help`` prints ``usage`` and the flags; a missing or
  unloadable config and an unknown ``--config.*`` field exit 1 with one ``error:`` line. The config
  becomes ``flags.FLAGS.config``.
  """
  argv = list(sys.argv if argv is None else argv)
  exit_on_help(usage, main.__module__, argv)
  try:
    rest = define_config_flag(argv)
  except ConfigError as e:
    sys.exit(f"error: {e}")
  app.run(main, argv=rest, flags_parser=parse_flags_or_exit)
