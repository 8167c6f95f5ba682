"""Evaluation figures on hand-computed examples (numpy only, no compile)."""

import numpy as np
import pytest

from lt_jax import metrics
from lt_jax import report

# 4 samples, 6 classes. Rank of the true label among the logits (1 = largest):
# sample 0: label 0, rank 1; sample 1: label 1, rank 3; sample 2: label 2, rank 4;
# sample 3: label 3, rank 6 (the smallest logit).
LOGITS = np.array([
    [9., 1., 2., 3., 4., 5.],
    [9., 7., 8., 1., 2., 3.],
    [9., 8., 6., 7., 1., 0.],
    [5., 4., 3., 0., 2., 1.],
])
LABELS = np.array([0, 1, 2, 3])


@pytest.mark.parametrize("k, error", [(1, 75.0), (3, 50.0), (5, 25.0), (6, 0.0), (10, 0.0)])
def test_top_k_error_by_hand(k, error):
  # top-1 holds sample 0 only; top-3 samples 0, 1; top-5 samples 0, 1, 2; k >= C all
  assert metrics.top_k_error(LOGITS, LABELS, k) == pytest.approx(error)


def test_evaluate_and_summary_report_top3():
  result = metrics.evaluate(LOGITS, LABELS, train_counts=np.array([200, 50, 10, 10, 5, 5]))
  assert (result["top1_error"], result["top3_error"], result["top5_error"]) == (75.0, 50.0, 25.0)
  second = {**result, "top1_error": 80.0, "top3_error": 60.0}
  summary = report.summarise([{**result, "epoch": 1}, {**second, "epoch": 2}])
  assert summary["final_top3_error"] == 60.0 and summary["best_top3_error"] == 50.0  # best by top-1
  old = {k: v for k, v in result.items() if k != "top3_error"}  # a record from before top-3
  assert report.summarise([{**old, "epoch": 1}])["final_top3_error"] is None
