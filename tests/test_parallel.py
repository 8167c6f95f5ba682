"""Data parallelism and replicas.

The 8-device check runs in a subprocess (the device count is fixed when JAX starts): see
``parallel_check.py`` for the equivalence it asserts and why it holds.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import ce_cifar
from conftest import tiny_config
from lt_jax import train

HERE = os.path.dirname(os.path.abspath(__file__))


def test_eight_device_step_equals_one_device_step_on_the_global_batch():
  """One subprocess (8 simulated devices) checks every method; one test so xdist runs it once."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, os.path.join(HERE, "parallel_check.py")], env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])
  batch = report.pop("device_batch")  # each device builds only its share of the global batch
  assert {"images", "labels", "ids", "meta_images", "reversed_images"} <= set(batch["keys"]), batch
  assert batch["images_vary"] > 0.1 and batch["batch"] == 0.0, batch
  assert set(report) == {"erm_cb_drw", "l2rw", "mwnet", "cbmeta", "mfm_network", "mfm_per_sample"}
  for case, result in report.items():
    assert result["devices"] == 8
    assert result["param_change"] > 1e-3, case  # the step moved w, so the comparison is not vacuous
    assert result["params"] < 1e-6, (case, result)
    assert result["meta"] < 1e-5, (case, result)
    assert result["loss"] < 1e-5, (case, result)


def test_replicas_equal_independent_runs(tmp_path):
  """R = 2 vmapped models in one program equal the two single runs with seeds s and s + 1."""
  def config(**fields):
    return tiny_config(ce_cifar, **{"train.epochs": 1, "train.plots": False, **fields})

  summary = train.train_and_evaluate(config(replicas=2), str(tmp_path / "both"))
  both = train.setup(config(replicas=2), str(tmp_path / "both")).state
  for r in range(2):
    workdir = str(tmp_path / f"seed{r}")
    single = train.train_and_evaluate(config(seed=r), workdir)
    state = train.setup(config(seed=r), workdir).state
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[r], rtol=2e-4, atol=2e-5),  # pylint: disable=cell-var-from-loop
                 state.params, both.params)
    assert summary["replicas"][r]["final_top1_error"] == pytest.approx(single["final_top1_error"], abs=0.5)
  errors = [s["final_top1_error"] for s in summary["replicas"]]
  assert summary["final_top1_error"] == pytest.approx(np.mean(errors))
  assert summary["final_top1_error_std"] == pytest.approx(np.std(errors))
  assert os.path.exists(tmp_path / "both" / "replica1" / "metrics.jsonl")
