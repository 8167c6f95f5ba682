"""Parses the published numbers in ``paper-results.md`` into values keyed by paper, table, row, column.

The file is prose plus markdown tables (``/work/shared/reference/paper-results.md``, or
``../shared/reference/paper-results.md`` from the repository root). Three shapes are read:

* markdown pipe tables captioned ``Table N ...``: key ``mfm/table1/<row>/<column>``, cells like
  ``26.90`` or ``16.12+-0.71`` (mean +- std);
* prose lists ``Table N, ... (error %): label value; label value, ...``: key
  ``mfm/table2/<label>`` (``Table 2``, ``Table 4``, ``Table 6``);
* slash lists ``CIFAR-10-LT (IF 200/100/50): label v/v/v; label v/v/v.``: key
  ``jamal/CIFAR-10-LT/<label>/IF<if>`` or, with a model in the heading,
  ``fsa/CIFAR-10-LT/ResNet-18/<label>/IF<if>``. A heading without ``(IF ...)`` reuses the IF list of
  the sentence before it in the same section; one without a dataset reuses that sentence's dataset.

The paper of a section comes from its ``## N. Title`` heading (``mfm``, ``fsa``, ``jamal``). A value
written ``-`` is not stored. Nothing is ever computed here except the parse: every stored value is
the text of the file (``PaperValue.text``) read as a number, with the line it came from.
"""

import dataclasses
import os
import pathlib
import re

DEFAULT_PATHS = ("../shared/reference/paper-results.md", "/work/shared/reference/paper-results.md")
ENV_VAR = "LT_JAX_PAPER_RESULTS"
SECTION_PAPERS = (("Meta Feature Modulator", "mfm"), ("Feature Space Augmentation", "fsa"),
                  ("Class-balanced meta", "jamal"))

_NUMBER = r"\d+(?:\.\d+)?"
_CELL = re.compile(rf"^({_NUMBER})(?:\s*\+-\s*({_NUMBER}))?$")
_PROSE_ITEM = re.compile(rf"^(.*\S)\s+({_NUMBER})$")
_SLASH_ITEM = re.compile(rf"^(.*?\S)\s+((?:{_NUMBER}|-)(?:/(?:{_NUMBER}|-))+)$")
_SENTENCE_END = re.compile(r"(?<=[\d-])\.\s+(?=[A-Z])")
_DATASET = re.compile(r"\b((?:CIFAR-10|CIFAR-100|Fashion-MNIST)-LT)\b")
_MODEL = re.compile(r"\b(ResNet-\d+)\b")


class PaperResultsError(ValueError):
  """The file is missing, or a key is not in it."""


@dataclasses.dataclass(frozen=True)
class PaperValue:
  """One published number: value (and std when given), the text as written, where it was read."""
  value: float
  std: float | None
  text: str
  metric: str  # error | accuracy (the FSA paper reports accuracy)
  line: int

  def as_error(self) -> float:
    """Top-1 error in percent (100 - accuracy for accuracy values)."""
    return self.value if self.metric == "error" else 100.0 - self.value

  def display(self) -> str:
    """The number as the paper writes it; accuracies shown as error with the accuracy beside."""
    if self.metric == "error":
      return self.text.replace("+-", " +- ")
    decimals = len(self.text.split(".")[1]) if "." in self.text else 0
    return f"{100.0 - self.value:.{decimals}f} (acc {self.text})"


def find_file(path: str | None = None) -> pathlib.Path:
  """``path``, else $LT_JAX_PAPER_RESULTS, else the first of DEFAULT_PATHS that exists."""
  candidates = [path] if path else ([os.environ[ENV_VAR]] if os.environ.get(ENV_VAR) else [])
  candidates = candidates or list(DEFAULT_PATHS)
  for candidate in candidates:
    if os.path.isfile(candidate):
      return pathlib.Path(candidate)
  raise PaperResultsError(f"paper results not found at {', '.join(candidates)} (pass --paper_results "
                          f"or set ${ENV_VAR})")


def load(path: str | None = None) -> dict[str, PaperValue]:
  """All values of the file at ``path`` (see ``find_file``), keyed as the module docstring says."""
  return parse(find_file(path).read_text())


def parse(text: str) -> dict[str, PaperValue]:
  """All values of the markdown ``text``; see the module docstring for the keys."""
  values = {}
  for paper, lines in _sections(text.splitlines()):
    for start, block in _paragraphs(lines):
      if block[0][1].startswith("|"):
        continue  # tables are read with their caption
      values.update(_prose_table(paper, start, block))
      values.update(_slash_lists(paper, start, block))
    values.update(_pipe_tables(paper, lines))
  return values


def _sections(lines: list[str]):
  """(paper, [(line number, text), ...]) per ``## `` section with a known paper."""
  paper, body = None, []
  for number, line in enumerate(lines, 1):
    if line.startswith("## "):
      if paper:
        yield paper, body
      paper = next((p for title, p in SECTION_PAPERS if title in line), None)
      body = []
    elif paper:
      body.append((number, line))
  if paper:
    yield paper, body


def _paragraphs(lines):
  """(first line number, [(number, text), ...]) per block of non-blank lines."""
  block = []
  for number, line in [*lines, (0, "")]:
    if line.strip():
      block.append((number, line.strip()))
    elif block:
      yield block[0][0], block
      block = []


def _split_outside_parens(text: str, separators: str) -> list[str]:
  """Splits at any of ``separators`` that is not inside parentheses."""
  parts, depth, current = [], 0, []
  for char in text:
    depth += (char == "(") - (char == ")")
    if char in separators and depth == 0:
      parts.append("".join(current))
      current = []
    else:
      current.append(char)
  parts.append("".join(current))
  return [p.strip() for p in parts if p.strip()]


def _prose_table(paper: str, start: int, block) -> dict[str, PaperValue]:
  """``Table N, ... (error %): label value; label value, ....`` as ``paper/tableN/label``."""
  joined = " ".join(text for _, text in block)
  match = re.match(r"^Table (\d+)\b.*?error %\):\s*(.*?)\.?$", joined)
  if not match or "|" in joined:
    return {}
  table, body = match.groups()
  values = {}
  for item in _split_outside_parens(body, ";,"):
    found = _PROSE_ITEM.match(item)
    if found:
      label, number = found.groups()
      values[f"{paper}/table{table}/{label}"] = PaperValue(float(number), None, number, "error",
                                                           _line_of(block, number, start))
  return values


def _pipe_tables(paper: str, lines) -> dict[str, PaperValue]:
  """Markdown tables after a ``Table N`` caption: ``paper/tableN/<row>/<column>``."""
  values, table, header = {}, None, None
  for number, line in lines:
    caption = re.match(r"^Table (\d+)\b", line)
    if caption:
      table, header = caption.group(1), None
    elif line.startswith("|") and table:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if header is None:
        header = cells
      elif not all(set(c) <= set("-: ") for c in cells):
        for column, cell in zip(header[1:], cells[1:]):
          parsed = _CELL.match(cell.replace(" ", ""))
          if parsed:
            mean, std = parsed.groups()
            values[f"{paper}/table{table}/{cells[0]}/{column}"] = PaperValue(
                float(mean), float(std) if std else None, cell.replace(" ", ""), "error", number)
    elif header is not None:  # the first line after a table ends it
      table, header = None, None
  return values


def _slash_lists(paper: str, start: int, block) -> dict[str, PaperValue]:
  """``[dataset][, model] [(IF a/b/c)]: label v/v/v; ...`` sentences of one paragraph."""
  values = {}
  joined = " ".join(text for _, text in block)
  imbalances, dataset = None, None
  metric = "accuracy" if paper == "fsa" else "error"
  for sentence in _SENTENCE_END.split(joined):
    head, colon, body = sentence.partition(":")
    if not colon:
      continue
    found_ifs = re.search(r"\(IF ([\d/]+)\)", head)
    if found_ifs:
      imbalances = found_ifs.group(1).split("/")
    found_dataset = _DATASET.search(head)
    if found_dataset:
      dataset = found_dataset.group(1)
    elif "-LT" in head:  # another dataset (ImageNet-LT, ...): nothing to inherit
      dataset = None
    model = _MODEL.search(head)
    if not imbalances or not dataset:
      continue
    prefix = f"{paper}/{dataset}" + (f"/{model.group(1)}" if model else "")
    for item in _split_outside_parens(body.rstrip(". "), ";"):
      found = _SLASH_ITEM.match(item)
      if not found:
        continue
      label, written = found.groups()
      numbers = written.split("/")
      if len(numbers) != len(imbalances):
        continue
      line = _line_of(block, written, _line_of(block, f"{label} ", start))
      for imbalance, number in zip(imbalances, numbers):
        if number != "-":
          values[f"{prefix}/{label}/IF{imbalance}"] = PaperValue(float(number), None, number, metric,
                                                                 line)
  return values


def _line_of(block, needle: str, default: int) -> int:
  """The number of the block's first line containing ``needle``."""
  return next((number for number, text in block if needle in text), default)


def lookup(values: dict[str, PaperValue], key: str) -> PaperValue:
  """``values[key]`` with an error listing the keys that share its first two parts."""
  if key in values:
    return values[key]
  prefix = "/".join(key.split("/")[:2])
  near = sorted(k for k in values if k.startswith(prefix))[:20]
  raise PaperResultsError(f"no paper value {key!r}; keys under {prefix!r}: {near or 'none'}")
