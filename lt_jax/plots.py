"""PNG plots written at the end of a run: label histogram, per-class recall, recall against
training count, confusion, most-confused pairs, curves.

Bounded for thousands of classes: per-class bars are at most ``MAX_WIDTH`` inches wide and name
their classes only up to ``MAX_NAMED`` of them; the confusion matrix is drawn class by class up to
``MAX_CONFUSION`` classes and by shot group (many / medium / few) above that (``confusion.npz``
holds it at any size); the most-confused pairs are the ``TOP_PAIRS`` largest off-diagonal rates.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lt_jax import files  # noqa: E402
from lt_jax import metrics  # noqa: E402

MAX_WIDTH = 24  # inches
MAX_NAMED = 60
MAX_CONFUSION = 100
TOP_PAIRS = 20


def save_figure(fig, path: str) -> str:
  """Lays out ``fig``, writes it to ``path`` (PNG, 120 dpi) and closes it; returns ``path``."""
  fig.tight_layout()
  files.makedirs(os.path.dirname(path))
  with files.open(path, "wb") as f:  # a URL too
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)
  return path


def _class_bars(values, class_names, color: str):
  """A bar per class, as wide as the classes need up to MAX_WIDTH; names only up to MAX_NAMED."""
  fig, ax = plt.subplots(figsize=(min(MAX_WIDTH, max(4, 0.35 * len(values))), 3))
  ax.bar(range(len(values)), values, color=color, width=1.0 if len(values) > MAX_NAMED else 0.8)
  if len(values) <= MAX_NAMED:
    ax.set_xticks(range(len(values)), class_names, rotation=90, fontsize=7)
  else:
    ax.set_xlabel(f"class (of {len(values)})")
  return fig, ax


def label_histogram(counts, class_names, path: str, title: str = "training labels") -> str:
  """Bar chart of images per class (log scale shows the tail)."""
  fig, ax = _class_bars(counts, class_names, "tab:blue")
  ax.set_yscale("log")
  ax.set_ylabel("images")
  ax.set_title(title)
  return save_figure(fig, path)


def per_class_recall(recall, class_names, path: str, title: str = "per-class recall") -> str:
  """Bar chart of each class's test recall, classes in training-frequency order."""
  recall = np.array([np.nan if r is None else r for r in recall], float)
  fig, ax = _class_bars(100 * recall, class_names, "tab:green")
  ax.set_ylim(0, 100)
  ax.set_ylabel("recall %")
  ax.set_title(title)
  return save_figure(fig, path)


def confusion_matrix(confusion, class_names, path: str) -> str:
  """Row-normalised confusion matrix (true class down, predicted across)."""
  confusion = np.asarray(confusion, float)
  rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  size = max(4, 0.3 * len(class_names))
  fig, ax = plt.subplots(figsize=(size + 1, size))
  image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  ticks = range(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=90, fontsize=6)
  ax.set_yticks(ticks, class_names, fontsize=6)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  fig.colorbar(image, ax=ax)
  return save_figure(fig, path)


def recall_against_count(recall, train_counts, path: str) -> str:
  """Each class's test recall against its training images (log axis), shot-group bounds marked."""
  recall = np.array([np.nan if r is None else r for r in recall], float)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.scatter(np.maximum(np.asarray(train_counts), 1), 100 * recall, s=8, alpha=0.6)
  ax.set_xscale("log")
  for bound in (metrics.FEW_SHOT_BELOW, metrics.MANY_SHOT_ABOVE):
    ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
  ax.set_ylim(-2, 102)
  ax.set_xlabel("training images of the class")
  ax.set_ylabel("test recall %")
  ax.set_title("recall against training count")
  return save_figure(fig, path)


def confused_pairs(confusion, top: int = TOP_PAIRS) -> list[tuple[int, int, float]]:
  """The ``top`` largest off-diagonal row-normalised rates: (true, predicted, rate), largest first."""
  confusion = np.asarray(confusion, float)
  rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  np.fill_diagonal(rates, 0.0)
  flat = np.argsort(rates, axis=None)[::-1][:top]
  pairs = [(int(i), int(j), float(rates[i, j])) for i, j in zip(*np.unravel_index(flat, rates.shape))]
  return [p for p in pairs if p[2] > 0]


def most_confused(confusion, class_names, path: str, top: int = TOP_PAIRS) -> str:
  """Horizontal bars of the most-confused (true -> predicted) pairs, as % of the true class."""
  pairs = confused_pairs(confusion, top)[::-1]  # largest at the top
  fig, ax = plt.subplots(figsize=(6, max(2, 0.25 * len(pairs) + 1)))
  ax.barh(range(len(pairs)), [100 * rate for _, _, rate in pairs], color="tab:red")
  ax.set_yticks(range(len(pairs)), [f"{class_names[i]} -> {class_names[j]}" for i, j, _ in pairs],
                fontsize=7)
  ax.set_xlabel("% of the true class's test images")
  ax.set_title(f"most-confused pairs (top {len(pairs)})")
  return save_figure(fig, path)


def group_confusion(confusion, train_counts) -> tuple[list[str], np.ndarray]:
  """The confusion matrix summed by shot group (non-empty groups only), row-normalised."""
  confusion = np.asarray(confusion, float)
  masks = {g: m for g, m in metrics.shot_groups(np.asarray(train_counts)).items() if m.any()}
  summed = np.array([[confusion[np.ix_(a, b)].sum() for b in masks.values()] for a in masks.values()])
  return list(masks), summed / np.maximum(summed.sum(1, keepdims=True), 1)


def confusion_by_group(confusion, train_counts, path: str) -> str:
  """Where each shot group's test images go: many / medium / few -> predicted group (%)."""
  names, rates = group_confusion(confusion, train_counts)
  fig, ax = plt.subplots(figsize=(4, 3.5))
  ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
  for (i, j), rate in np.ndenumerate(rates):
    ax.text(j, i, f"{100 * rate:.1f}", ha="center", va="center", fontsize=8)
  ax.set_xticks(range(len(names)), names)
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel("predicted class's group")
  ax.set_ylabel("true class's group")
  return save_figure(fig, path)


def learning_curves(train_records, eval_records, path: str) -> str:
  """Training loss and test top-1 error against the epoch."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
  left.plot([r["epoch"] for r in train_records], [r["loss"] for r in train_records])
  left.set_xlabel("epoch")
  left.set_ylabel("training loss")
  right.plot([r["epoch"] for r in eval_records], [r["top1_error"] for r in eval_records], "o-")
  right.set_xlabel("epoch")
  right.set_ylabel("test top-1 error %")
  return save_figure(fig, path)


def write_all(workdir: str, class_names, train_counts, final_eval, confusion, train_records,
              eval_records):
  """The plots into ``workdir/plots`` (with a confusion matrix: class by class up to
  MAX_CONFUSION classes, by shot group above, and the most-confused pairs); returns their paths."""
  out = files.join(workdir, "plots")
  recall = final_eval["per_class_recall"]
  paths = [
      label_histogram(train_counts, class_names, files.join(out, "train_labels.png")),
      per_class_recall(recall, class_names, files.join(out, "per_class_recall.png")),
      recall_against_count(recall, train_counts, files.join(out, "recall_vs_count.png")),
      learning_curves(train_records, eval_records, files.join(out, "learning_curves.png")),
  ]
  if confusion is not None:
    if len(class_names) <= MAX_CONFUSION:
      paths.append(confusion_matrix(confusion, class_names, files.join(out, "confusion.png")))
    else:
      paths.append(confusion_by_group(confusion, train_counts,
                                      files.join(out, "confusion_by_group.png")))
    paths.append(most_confused(confusion, class_names, files.join(out, "most_confused.png")))
  return paths


def modulation_tsne(modulation, labels, class_names, path: str, title: str = "") -> str:
  """t-SNE of per-sample gamma and beta vectors coloured by class (MFM Figs. 5 and 9)."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  gamma, beta = (np.asarray(v) for v in modulation)
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  perplexity = max(2.0, min(30.0, (len(labels) - 1) / 3))
  for ax, values, name in ((axes[0], gamma, "gamma"), (axes[1], beta, "beta")):
    if np.allclose(values, values[:1]):
      ax.set_title(f"{title} {name}: constant")
      continue
    xy = TSNE(perplexity=perplexity, init="pca", random_state=0).fit_transform(values)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10" if len(class_names) <= 10 else "tab20", s=6)
    ax.set_title(f"{title} {name}")
    ax.set_xticks([])
    ax.set_yticks([])
  if len(class_names) <= 20 and "points" in locals():
    fig.legend(points.legend_elements()[0], class_names, loc="center right", fontsize=7)
  return save_figure(fig, path)
