"""The papers' training recipes, as transcribed into ``experiments/paper_recipes/PAPER.csv``.

One CSV per paper (the papers of ``paper_results.PAPERS``), one stated value per line:
``config,field,value,source,location,quote``.

- ``config``: the config file that claims the paper's rows (as in ``experiments/tables.py``).
- ``field``: a config field (``optim.lr``); ``value``: a Python literal (``0.1``, ``(160, 180)``,
  ``'resnet32'``), what the field must hold.
- ``source``: ``paper`` when the paper states it: ``location`` is then ``line N`` of the paper's
  text (``paper_results.PAPERS``) and ``quote`` a few words copied from that line. ``assumed`` when
  the paper is silent: ``location`` says where the value comes from (official code, a cited paper,
  our choice) and ``quote`` may be empty.

``tests/test_recipes.py`` checks every config against its lines, every table row's overrides
against its config's lines, and (with the papers' text beside the repository) every quote.
"""

import ast
import csv
import dataclasses
import pathlib

from experiments import paper_results

DIRECTORY = pathlib.Path(__file__).resolve().parent / "paper_recipes"
SOURCES = ("paper", "assumed")


@dataclasses.dataclass(frozen=True)
class Stated:
  """One recipe value: ``config``'s ``field`` must be ``value``; where that comes from."""
  paper: str
  config: str
  field: str
  value: object
  source: str  # paper | assumed
  location: str
  quote: str
  where: str  # file:line of this value in the CSV, for error messages


def _literal(text: str):
  value = ast.literal_eval(text)
  return tuple(value) if isinstance(value, list) else value


def load(directory: pathlib.Path = DIRECTORY) -> list[Stated]:
  """Every recipe value of the CSVs in ``directory``; ValueError naming file and line if bad."""
  stated, seen = [], set()
  for path in sorted(directory.glob("*.csv")):
    paper = path.stem
    with open(path, newline="") as f:
      for line, record in enumerate(csv.DictReader(f), 2):
        where = f"{path.name}:{line}"
        try:
          value = _literal(record["value"])
        except (ValueError, SyntaxError):
          raise ValueError(f"{where}: value {record['value']!r} is not a Python literal") from None
        key = (paper, record["config"], record["field"])  # a config may claim rows of two papers
        if (paper not in paper_results.PAPERS or record["source"] not in SOURCES
            or not record["location"] or key in seen
            or (record["source"] == "paper" and not record["quote"])):
          raise ValueError(f"{where}: expected a paper of {sorted(paper_results.PAPERS)}, a new "
                           f"config/field for this paper, source one of {SOURCES}, a location (and a quote for "
                           f"source=paper), got {record}")
        seen.add(key)
        stated.append(Stated(paper, record["config"], record["field"], value, record["source"],
                             record["location"], record["quote"], where))
  return stated


def by_config(stated: list[Stated]) -> dict[str, list[Stated]]:
  """The recipe values grouped by config file."""
  grouped = {}
  for s in stated:
    grouped.setdefault(s.config, []).append(s)
  return grouped
