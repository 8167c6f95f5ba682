"""The papers' published numbers, as transcribed into ``experiments/paper_numbers/PAPER.csv``.

One CSV per paper (``PAPERS``), one published number per line: ``table,row,column,value,location``.
``value`` is the number as the paper prints it (``16.12+-0.71`` = mean +- std); ``location`` is
where it stands in the text of the paper (the file named in ``PAPERS``: table and line number).
Keys are ``paper/table/row/column`` (``paper/table/row`` for a one-column table), e.g.
``mfm/table1/BBN/C10 IF50``, ``jamal/CIFAR-10-LT/ours+CE/IF100``, ``fsa/table1/FSA/ResNet-18 IF100``.
A cell the paper leaves empty or writes ``-`` has no line. Nothing here is computed.
"""

import csv
import dataclasses
import pathlib
import re

DIRECTORY = pathlib.Path(__file__).resolve().parent / "paper_numbers"
PAPERS = {  # CSV name: (the paper's text the numbers were transcribed from, what they measure)
    "mfm": ("mfm-meta-feature-modulator.txt", "error"),  # Wang et al., Meta Feature Modulator
    "jamal": ("jamal-rethinking-class-balanced-slides.txt", "error"),  # Jamal et al., slides
    "fsa": ("fsa-feature-space-augmentation.txt", "accuracy"),  # Chu et al., ECCV 2020
}
_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(?:\+-(\d+(?:\.\d+)?))?$")


@dataclasses.dataclass(frozen=True)
class PaperValue:
  """One published number: value (and std when given), the text as printed, where it is."""
  value: float
  std: float | None
  text: str
  metric: str  # error | accuracy (the FSA paper reports accuracy)
  location: str

  def display(self) -> str:
    """The number as the paper prints it; accuracies shown as error with the accuracy beside."""
    if self.metric == "error":
      return self.text.replace("+-", " +- ")
    decimals = len(self.text.split(".")[1]) if "." in self.text else 0
    return f"{100.0 - self.value:.{decimals}f} (acc {self.text})"


def key(paper: str, table: str, row: str, column: str = "") -> str:
  """``paper/table/row/column``, without ``/column`` when it is empty."""
  return "/".join([paper, table, row] + ([column] if column else []))


def load(directory: pathlib.Path = DIRECTORY) -> dict[str, PaperValue]:
  """Every number of the CSVs in ``directory``, by key; ValueError naming file and line if bad."""
  values = {}
  for paper, (_, metric) in PAPERS.items():
    path = directory / f"{paper}.csv"
    with open(path, newline="") as f:
      for line, record in enumerate(csv.DictReader(f), 2):
        found = _VALUE.match(record["value"])
        name = key(paper, record["table"], record["row"], record["column"])
        if not found or name in values or not record["location"]:
          raise ValueError(f"{path}:{line}: expected a new table/row/column with value NUMBER or "
                           f"MEAN+-STD and a location, got {record}")
        mean, std = found.groups()
        values[name] = PaperValue(float(mean), float(std) if std else None, record["value"], metric,
                                  record["location"])
  return values
