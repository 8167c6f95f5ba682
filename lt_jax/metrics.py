"""Evaluation metrics from test logits: top-k error (k = 1, 3, 5; Jamal et al. report top-3), per-class recall, shot groups, confusion.

Shot groups follow the long-tailed literature: many-shot classes have more than 100 training
images, medium-shot 20 to 100, few-shot fewer than 20.
"""

import numpy as np

MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[true, predicted]."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
  """Recall of each class (nan for a class absent from the test set)."""
  totals = confusion.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.diag(confusion) / totals


def shot_groups(train_counts: np.ndarray) -> dict[str, np.ndarray]:
  """Masks of many (> 100), medium (20-100) and few (< 20) shot classes."""
  train_counts = np.asarray(train_counts)
  return {
      "many": train_counts > MANY_SHOT_ABOVE,
      "medium": (train_counts >= FEW_SHOT_BELOW) & (train_counts <= MANY_SHOT_ABOVE),
      "few": train_counts < FEW_SHOT_BELOW,
  }


def top_k_error(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Percentage of samples whose label is not among the k largest logits."""
  k = min(k, logits.shape[-1])
  top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
  return float(100.0 * (1.0 - np.mean(np.any(top == labels[:, None], axis=-1))))


def evaluate(logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict:
  """All evaluation figures; errors and accuracies in percent. Everything but ``confusion`` (a
  (C, C) int array, C^2 numbers: written once at the end of a run, ``metric_writer``) is JSON-able.

  Shot-group accuracy is over the test samples of the group's classes (None for an empty group).
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  num_classes = logits.shape[-1]
  confusion = confusion_matrix(labels, logits.argmax(-1), num_classes)
  recall = per_class_recall(confusion)
  result = {
      "top1_error": top_k_error(logits, labels, 1),
      "top3_error": top_k_error(logits, labels, 3),
      "top5_error": top_k_error(logits, labels, 5),
      "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
      "confusion": confusion,
  }
  for group, mask in shot_groups(train_counts).items():
    total = confusion[mask].sum()
    correct = np.diag(confusion)[mask].sum()
    result[f"{group}_accuracy"] = float(100.0 * correct / total) if total else None
  return result


def shot_group_sizes(train_counts: np.ndarray) -> dict[str, int]:
  """Classes per shot group (many > 100, medium 20-100, few < 20)."""
  return {group: int(mask.sum()) for group, mask in shot_groups(train_counts).items()}
