"""The end of a run: ``summary.json`` from the records on disk, per-replica folders, plots, the printout."""


from absl import logging
import jax
import numpy as np

from lt_jax import files
from lt_jax import metric_writer
from lt_jax import provenance

SUMMARY_FILE = "summary.json"
FIGURES = ("top1_error", "top3_error", "top5_error", "many_accuracy", "medium_accuracy", "few_accuracy")


def replica_dirs(workdir: str, replicas: int) -> list[str]:
  """Where each replica's metrics, plots and summary go: the workdir itself, or workdir/replica{r}."""
  if replicas == 1:
    return [workdir]
  return [files.join(workdir, f"replica{r}") for r in range(replicas)]


def replica(tree, r: int, replicas: int):
  """Replica r's slice of a (possibly replica-stacked) pytree."""
  return tree if replicas == 1 else jax.tree.map(lambda x: x[r], tree)


def summarise(eval_records: list[dict]) -> dict:
  """Final-epoch and best-epoch figures from the evaluation records (a figure a record lacks, e.g.
  top-3 in the records of a run started before it was added, is None)."""
  final = eval_records[-1]
  best = min(eval_records, key=lambda r: r["top1_error"])
  return {
      "final_epoch": final["epoch"],
      **{f"final_{k}": final.get(k) for k in FIGURES},
      "best_epoch": best["epoch"],
      **{f"best_{k}": best.get(k) for k in FIGURES},
      "final_per_class_recall": final["per_class_recall"],
  }


def aggregate(summaries: list[dict]) -> dict:
  """Mean and (population) std over replicas of every scalar summary field, plus each replica's."""
  result = {"replicas": summaries}
  for key, value in summaries[0].items():
    values = [s[key] for s in summaries]
    if isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
      result[key] = float(np.mean(values))
      result[f"{key}_std"] = float(np.std(values))
  result["final_per_class_recall"] = [
      None if any(s["final_per_class_recall"][c] is None for s in summaries)
      else float(np.mean([s["final_per_class_recall"][c] for s in summaries]))
      for c in range(len(summaries[0]["final_per_class_recall"]))]
  return result


def finish(workdir: str, *, replicas: int, epochs: int, class_names, class_counts, plots: bool,
           extra: list[dict], note: str = "") -> dict:
  """Writes ``summary.json`` (each replica's too), then the plots, prints the report; returns it.

  The summary is rebuilt from ``metrics.jsonl`` (the last record per epoch), so a resumed run's
  equals an uninterrupted one's. ``extra``: fields added to each replica's summary.
  """
  folders = replica_dirs(workdir, replicas)
  evals = [metric_writer.read_records(folder, "eval", max_epoch=epochs) for folder in folders]
  summaries = [{**summarise(records), **extra[r]} for r, records in enumerate(evals)]
  summary = summaries[0] if replicas == 1 else aggregate(summaries)
  summary[provenance.KEY] = provenance.record()
  if jax.process_index() != 0:
    return summary
  files.write_json_atomic(files.join(workdir, SUMMARY_FILE), summary)
  if plots:  # after the summary: a failed plot is a warning, never a lost run
    from lt_jax import plots as plots_lib  # pylint: disable=g-import-not-at-top  (matplotlib)
    for folder, eval_records in zip(folders, evals):
      try:
        plots_lib.write_all(folder, class_names, class_counts, eval_records[-1],
                            metric_writer.read_confusion(folder),
                            metric_writer.read_records(folder, "train", max_epoch=epochs), eval_records)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("plots of %s failed (%s: %s); summary.json is written", folder,
                        type(e).__name__, e)
  print(format_summary(summary, class_names, class_counts) + (f"\n{note}" if note else ""))
  return summary


def format_summary(summary: dict, class_names, train_counts) -> str:
  """Human-readable end-of-run report: errors, shot groups, per-class recall."""
  def spread(key):  # "+- std" over replicas, when there are several
    return f" +- {summary[key + '_std']:.2f}" if key + "_std" in summary else ""

  lines = [
      (f"mean of {len(summary['replicas'])} replicas: " if "replicas" in summary else "") +
      f"top-1 error: final {summary['final_top1_error']:.2f}{spread('final_top1_error')}% "
      f"(epoch {summary['final_epoch']:.0f}), best {summary['best_top1_error']:.2f}"
      f"{spread('best_top1_error')}% (epoch {summary['best_epoch']:.0f})",
      "shot groups (final): " + ", ".join(
          f"{g} {summary[f'final_{g}_accuracy']:.1f}%" for g in ("many", "medium", "few")
          if summary.get(f"final_{g}_accuracy") is not None),
      "per-class recall (final):",
  ]
  for name, count, recall in zip(class_names, train_counts, summary["final_per_class_recall"]):
    lines.append(f"  {name:>12s}  n={int(count):5d}  " + ("-" if recall is None else f"{100 * recall:5.1f}%"))
  return "\n".join(lines)
