"""Compares finished runs: a table of their summaries, per-class recall side by side, confusion
matrices in a row.

  python -m experiments.compare --output=DIR [LABEL=]WORKDIR [LABEL=]WORKDIR ...

Reads what every run leaves in its workdir: ``summary.json``, the last ``eval`` record of
``metrics.jsonl`` (per-class recall), ``confusion.npz`` and ``data_selection.json`` (class names,
training counts).
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

from lt_jax import data
from lt_jax import files
from lt_jax import metric_writer
from lt_jax import plots

plt = plots.plt


def final_eval(workdir: str) -> dict:
  """The last evaluation record of a run; FileNotFoundError when it has none."""
  records = metric_writer.read_records(workdir, "eval")
  if not records:
    raise FileNotFoundError(f"{workdir}: no eval record in metrics.jsonl (has the run started?)")
  return records[-1]


def class_info(workdir: str) -> tuple[list[str], list[int]]:
  """(class names, training images per class) from ``data_selection.json``."""
  selection = data.read_selection(workdir)
  return selection["class_names"], selection["counts"]["train"]


def compare_plots(workdirs: dict[str, str], out: str) -> list[str]:
  """Per-class recall (grouped bars) and row-normalised confusion matrices of several runs.

  Args:
    workdirs: label -> workdir of a finished run, in the order to plot; all runs must have the
      same classes.
    out: folder for ``per_class_recall.png`` and ``confusion.png`` (created).

  Returns:
    The paths written.
  """
  if not workdirs:
    raise ValueError("compare_plots needs at least one workdir")
  labels = list(workdirs)
  evals = [final_eval(workdirs[label]) for label in labels]
  names, counts = class_info(workdirs[labels[0]])
  for label, record in zip(labels, evals):
    if len(record["per_class_recall"]) != len(names):
      raise ValueError(f"{label}: {len(record['per_class_recall'])} classes, {labels[0]} has {len(names)}")
  os.makedirs(out, exist_ok=True)
  return [_recall_bars(labels, evals, names, counts, os.path.join(out, "per_class_recall.png")),
          _confusions(labels, [metric_writer.read_confusion(workdirs[label]) for label in labels], names,
                      os.path.join(out, "confusion.png"))]


def run_labels(args) -> dict[str, str]:
  """``['ce=runs/a', 'runs/b']`` -> ``{'ce': 'runs/a', 'b': 'runs/b'}`` (label: the folder name)."""
  runs = {}
  for arg in args:
    label, sep, workdir = arg.partition("=")
    label, workdir = (label, workdir) if sep else (os.path.basename(os.path.normpath(arg)), arg)
    if label in runs:
      raise ValueError(f"two runs labelled {label!r}; name them: LABEL=WORKDIR")
    runs[label] = workdir
  return runs


def summary_table(workdirs: dict[str, str]) -> str:
  """Markdown table of each run's ``summary.json``: final and best top-1 error, final many /
  medium / few-shot accuracy (%)."""
  lines = ["| run | final top-1 err | best top-1 err | many | medium | few |", "|---|---|---|---|---|---|"]
  for label, workdir in workdirs.items():
    s = files.read_json(os.path.join(workdir, "summary.json"), "the summary of a finished run")
    groups = [s.get(f"final_{g}_accuracy") for g in ("many", "medium", "few")]
    lines.append(f"| {label} | {s['final_top1_error']:.2f} | {s['best_top1_error']:.2f} | " +
                 " | ".join("-" if g is None else f"{g:.1f}" for g in groups) + " |")
  return "\n".join(lines)


def main(argv):
  try:
    runs = run_labels(argv[1:])
    if not runs:
      raise ValueError("name the runs to compare: [LABEL=]WORKDIR ...")
    print(summary_table(runs))
    for path in compare_plots(runs, flags.FLAGS.output):
      print(f"wrote {path}")
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


def _recall_bars(labels, evals, names, counts, path: str) -> str:
  num_classes, width = len(names), 0.8 / len(labels)
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * num_classes * max(1, len(labels) / 2)), 3.5))
  for i, (label, record) in enumerate(zip(labels, evals)):
    recall = np.array([np.nan if r is None else r for r in record["per_class_recall"]], float)
    ax.bar(np.arange(num_classes) + (i - (len(labels) - 1) / 2) * width, 100 * recall, width,
           label=f"{label} (err {record['top1_error']:.2f}%)")
  ax.set_xticks(range(num_classes), [f"{n}\n(n={c})" for n, c in zip(names, counts)], fontsize=7)
  ax.set_ylim(0, 100)
  ax.set_ylabel("test recall %")
  ax.set_title("per-class recall (final epoch), classes by training frequency")
  ax.legend(fontsize=7)
  return plots.save_figure(fig, path)


def _confusions(labels, confusions, names, path: str) -> str:
  size = max(3, 0.3 * len(names))
  fig, axes = plt.subplots(1, len(labels), figsize=(size * len(labels) + 1, size + 0.6), squeeze=False)
  for ax, label, confusion in zip(axes[0], labels, confusions):
    if confusion is None:
      raise FileNotFoundError(f"{label}: no {metric_writer.CONFUSION_FILE} (has the run finished?)")
    confusion = np.asarray(confusion, float)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_title(label, fontsize=8)
  axes[0][0].set_ylabel("true")
  fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


if __name__ == "__main__":
  flags.DEFINE_string("output", "compare", "Folder for the comparison plots.")
  app.run(main)
