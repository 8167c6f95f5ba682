"""The papers' recipes (experiments/paper_recipes/*.csv) against the configs that claim their rows."""

import dataclasses
import functools
import pathlib

import pytest

from experiments import paper_recipes
from experiments import paper_results
from experiments import tables
from launch import commands
from launch import sweep
from lt_jax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
PAPERS = REPO.parent / "shared" / "papers"  # the papers' text; not part of the repository
STATED = paper_recipes.load()
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@functools.cache
def fields_of(config: str) -> dict:
  """The flat fields of a config file (with its ``:arg``, if any)."""
  return config_lib.flat(commands.parse_config_flags(config, []).to_dict())


def _normal(value):
  return tuple(value) if isinstance(value, list) else value


def mismatches(stated: list) -> list[str]:
  """The recipe values that their configs do not hold, one line each."""
  return [f"{s.config}: {s.field} = {fields_of(s.config).get(s.field, '<missing>')!r}, {s.source} "
          f"says {s.value!r} ({s.where})" for s in stated
          if _normal(fields_of(s.config).get(s.field, KeyError)) != s.value]


@pytest.mark.parametrize("config", sorted(paper_recipes.by_config(STATED)))
def test_config_holds_its_papers_recipe(config):
  assert not mismatches(paper_recipes.by_config(STATED)[config])


def allowed_overrides(row) -> set:
  """The stated fields a table row may change on purpose: the fields of its config's ``sweep()``
  rows (the ablations the table lists), and the meta / MFM fields of a baseline row that switches
  its config's ``method`` (e.g. BaseModel = the MFM config with method=erm, meta.strategy=none)."""
  try:
    fields = {f for _, overrides in sweep.sweep_rows(row.config) for f in overrides}
  except commands.CommandError:  # no sweep()
    fields = set()
  if any(field == "method" for field, _ in row.overrides):
    fields |= {f for f, _ in row.overrides if f.startswith(("meta.", "mfm."))}
  return fields


def test_no_table_row_overrides_its_configs_recipe():
  recipes = paper_recipes.by_config(STATED)
  wrong = []
  for name in tables.TABLES:
    for row in tables.get_table(name).rows:
      stated = {s.field: s for s in recipes.get(row.config, ())}
      allowed = allowed_overrides(row) if stated and row.overrides else set()
      for field, value in row.overrides:
        if field in stated and _normal(value) != stated[field].value and field not in allowed:
          wrong.append(f"{name}/{row.name}: {field}={value!r} ({stated[field].where} says "
                       f"{stated[field].value!r})")
  assert not wrong, "; ".join(wrong)


def changed(value):
  """A value of the same type that differs from ``value``: bools flipped, numbers v + 1 + |v|
  (never v: 0 -> 1, -1 -> 1, 3 -> 7), strings and tuples extended."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1 + abs(value)
  if isinstance(value, str):
    return value + "_changed"
  if isinstance(value, tuple):
    return value + ("changed",)
  raise TypeError(f"no changed value for {value!r} ({type(value).__name__})")


def test_a_changed_value_is_caught():
  for s in STATED:
    assert changed(s.value) != s.value and type(changed(s.value)) is type(s.value), s.where
  changed_lines = [dataclasses.replace(s, value=changed(s.value)) for s in STATED]
  assert len(mismatches(changed_lines)) == len(STATED)


def test_bad_lines_are_named(tmp_path):
  (tmp_path / "mfm.csv").write_text("config,field,value,source,location,quote\n"
                                    "configs/mfm_cifar.py,optim.lr,0.1,guess,line 3,\n")
  with pytest.raises(ValueError, match=r"mfm\.csv:2: expected .*source one of"):
    paper_recipes.load(tmp_path)
  (tmp_path / "mfm.csv").write_text("config,field,value,source,location,quote\n"
                                    "configs/mfm_cifar.py,optim.lr,point one,paper,line 3,x\n")
  with pytest.raises(ValueError, match=r"mfm\.csv:2: value 'point one' is not a Python literal"):
    paper_recipes.load(tmp_path)


@pytest.mark.skipif(not PAPERS.is_dir(), reason=f"{PAPERS} (the papers' text) is not here")
def test_every_quote_stands_on_its_cited_line():
  for s in STATED:
    if s.source == "paper":
      line = int(s.location.split("line ")[1].split()[0].rstrip(",;"))
      text = (PAPERS / paper_results.PAPERS[s.paper][0]).read_text().splitlines()[line - 1]
      assert s.quote in text, f"{s.where}: {s.quote!r} is not on line {line}: {text[:200]}"


def test_every_mfm_config_of_a_paper_table_has_its_recipe():
  """Each configs/mfm_* file that an MFM table row runs states its recipe in mfm.csv."""
  stated = {s.config for s in STATED if s.paper == "mfm"}
  used = {row.config for name in tables.TABLES if name.startswith("mfm_")
          for row in tables.get_table(name).rows if row.config.startswith("configs/mfm_")}
  assert used and used <= stated, sorted(used - stated)
