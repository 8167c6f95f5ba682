"""The papers' recipes (experiments/paper_recipes/*.csv) against the configs that claim their rows."""

import dataclasses
import functools
import pathlib

import pytest

from experiments import paper_recipes
from experiments import paper_results
from experiments import tables
from launch import commands
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


def test_no_table_row_overrides_its_configs_recipe():
  recipes = paper_recipes.by_config(STATED)
  wrong = []
  for name in tables.TABLES:
    for row in tables.get_table(name).rows:
      stated = {s.field: s for s in recipes.get(row.config, ())}
      for field, value in row.overrides:
        if field in stated and _normal(value) != stated[field].value:
          wrong.append(f"{name}/{row.name}: {field}={value!r} ({stated[field].where} says "
                       f"{stated[field].value!r})")
  assert not wrong, "; ".join(wrong)


def _changed(value):
  """Another value of the same kind: not a bool, 2x a number (1 for 0), () for anything else."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value * 2 if value else 1
  return ()


def test_a_changed_value_is_caught():
  changed = [dataclasses.replace(s, value=_changed(s.value)) for s in STATED]
  assert len(mismatches(changed)) == len(STATED)


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
