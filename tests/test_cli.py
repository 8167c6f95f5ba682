"""The command line before JAX starts: config names from any directory, override fields, boolean
environment variables, one-line errors; packaging and the provenance of a run."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

from configs import default
from lt_jax import cli
from lt_jax import provenance

REPO = pathlib.Path(__file__).resolve().parent.parent
# ml_collections' config loader uses importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.mark.parametrize("spec,arg", [("mfm_cifar", None), ("mfm_cifar.py:smoke", "smoke"),
                                      ("configs/mfm_cifar.py", None), ("configs/mfm_cifar.py:", "")])
def test_config_names_resolve_to_the_shipped_file_from_any_directory(tmp_path, spec, arg):
  assert cli.resolve_config(spec, cwd=tmp_path) == (cli.config_dir() / "mfm_cifar.py", arg)


def test_shipped_and_own_configs_load_from_any_directory(tmp_path):
  config = cli.load_config("mfm_cifar:smoke", cwd=tmp_path)  # relative imports inside configs/
  assert config.method == "mfm" and config.dataset.source == "digits"
  (tmp_path / "mine.py").write_text(textwrap.dedent("""
      from lt_jax_configs import default

      def get_config(arg=""):
        c = default.get_config(arg)
        c.optim.lr = 0.25
        return c
      """))
  mine = cli.load_config("mine.py:smoke", cwd=tmp_path)  # a file of one's own, before the names
  assert mine.optim.lr == 0.25 and mine.dataset.source == "digits"
  assert cli.load_config(str(tmp_path / "mine.py")).dataset.source == default.get_config().dataset.source
  with pytest.raises(cli.ConfigError, match=r"config file not found: quickstrat .*did you mean quickstart\?"):
    cli.resolve_config("quickstrat", cwd=tmp_path)
  with pytest.raises(cli.ConfigError, match=r"unknown config argument 'smok'; expected 'smoke'"):
    cli.load_config("quickstart:smok")


def test_override_fields_are_checked_with_the_closest_names():
  config = default.get_config()
  cli.check_overrides(config, ["--config.optim.lr=0.1", "--noconfig.train.plots", "-config.seed", "1",
                               "--workdir=x"])
  with pytest.raises(cli.ConfigError, match=r"unknown config field 'optim.lrr' in --config.optim.lrr=1; "
                                            r"did you mean optim.lr"):
    cli.check_overrides(config, ["--config.seed=1", "--config.optim.lrr=1"])
  parsed = cli.parse_config("quickstart:smoke", ["--config.optim.lr=0.5", "--workdir=w"])
  assert parsed.optim.lr == 0.5 and parsed.is_locked
  with pytest.raises(cli.ConfigError, match="could not convert string to float: 'abc'"):
    cli.parse_config("quickstart", ["--config.optim.lr=abc"])


@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("0", False), ("no", False),
                                            ("False", False), ("OFF", False), ("1", True),
                                            ("true", True), ("Yes", True), (" on ", True)])
def test_boolean_environment_variables(monkeypatch, value, expected):
  if value is None:
    monkeypatch.delenv("LT_JAX_TEST_FLAG", raising=False)
  else:
    monkeypatch.setenv("LT_JAX_TEST_FLAG", value)
  assert cli.env_flag("LT_JAX_TEST_FLAG") is expected


def test_bad_boolean_environment_variable_is_named(monkeypatch):
  monkeypatch.setenv("LT_JAX_DISTRIBUTED", "maybe")
  with pytest.raises(ValueError, match=r"LT_JAX_DISTRIBUTED='maybe': expected 1/true/yes/on or 0/false/no/off"):
    cli.env_flag("LT_JAX_DISTRIBUTED")


def test_cli_errors_are_one_line_and_come_before_jax(tmp_path):
  """In one fresh process (from another directory): --help, a missing config, an unknown field and
  a bad LT_JAX_DISTRIBUTED each end in one line, and JAX is never imported."""
  script = textwrap.dedent("""
      import json, os, sys
      from lt_jax import main
      for env, argv in [("", ["--help"]), ("", ["--config=quickstrat", "--workdir=w"]),
                        ("", ["--config=quickstart", "--workdir=w", "--config.optim.lrr=1"]),
                        ("maybe", ["--config=quickstart:smoke", "--workdir=w"])]:
        os.environ["LT_JAX_DISTRIBUTED"] = env
        try:
          main.cli(["lt-jax-train", *argv])
        except SystemExit as e:
          print("EXIT", json.dumps(e.code))
      print("JAX IMPORTED", "jax" in sys.modules)
      """)
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  result = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  out = result.stdout
  assert "examples:" in out and "lt-jax-train --config=quickstart --workdir=" in out and "--workdir" in out
  exits = [json.loads(e) for e in re.findall(r"^EXIT (.*)$", out, re.M)]
  assert exits[0] == 0, out
  assert exits[1].startswith("error: config file not found: quickstrat") and "did you mean quickstart" in exits[1]
  assert exits[2].startswith("error: unknown config field 'optim.lrr'") and "did you mean optim.lr" in exits[2]
  assert exits[3].startswith("error: LT_JAX_DISTRIBUTED='maybe'"), out
  assert not any("\n" in e for e in exits[1:])  # one line each
  assert out.rstrip().endswith("JAX IMPORTED False"), out


def test_pyproject_ships_every_package_the_configs_and_the_console_scripts():
  project = tomllib.loads((REPO / "pyproject.toml").read_text())
  setuptools = project["tool"]["setuptools"]
  in_tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "lt_jax").rglob("__init__.py")}
  assert set(setuptools["packages"]) == in_tree | {cli.CONFIG_PACKAGE}
  assert setuptools["package-dir"] == {cli.CONFIG_PACKAGE: "configs"}
  scripts = project["project"]["scripts"]
  for name in ("lt-jax-train", "lt-jax-data", "lt-jax-bench"):  # lt_jax's own; evaluate etc. by name
    module, function = scripts[name].split(":")
    assert f"def {function}(" in (REPO / (module.replace(".", "/") + ".py")).read_text(), name
  assert {"lt-jax-evaluate", "lt-jax-predict", "lt-jax-export"} <= set(scripts)


def test_git_state_of_the_source_tree_and_of_a_folder_without_git(tmp_path):
  commit, dirty = provenance.git_state(REPO)
  if (REPO / ".git").exists():
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and isinstance(dirty, bool)
  assert provenance.git_state(tmp_path) == (None, None)  # e.g. an installed lt_jax


def test_config_file_records_are_plain_json():
  record = provenance.config_record(default.get_config())
  assert json.loads(json.dumps(record))[provenance.KEY]["devices"]["count"] >= 1
  assert record["optim"]["lr"] == default.get_config().optim.lr
