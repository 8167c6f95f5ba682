"""Decoupled classifiers: tau-normalisation by hand, class-balanced sampling, cRT / LWS / tau-norm runs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import crt_cifar
from configs import lws_cifar
from configs import tau_norm_cifar
from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import run
from lt_jax import train
from lt_jax import two_phase
from lt_jax.data import samplers
from lt_jax.methods import decouple
from tests.conftest import tiny_config


def test_tau_normalise_by_hand():
  kernel = jnp.array([[3.0, 0.0, 1.0], [4.0, 2.0, 0.0]])  # column norms 5, 2, 1
  np.testing.assert_allclose(decouple.tau_normalise(kernel, 1.0), [[0.6, 0.0, 1.0], [0.8, 1.0, 0.0]])
  np.testing.assert_allclose(decouple.tau_normalise(kernel, 0.5),
                             [[3 / 5**0.5, 0.0, 1.0], [4 / 5**0.5, 2 / 2**0.5, 0.0]], rtol=1e-6)
  np.testing.assert_array_equal(decouple.tau_normalise(kernel, 0.0), kernel)


def test_class_balanced_sampler_frequencies():
  labels = np.repeat(np.arange(3), [200, 20, 2])
  index = samplers.class_index(labels, 3)
  probs = samplers.class_probabilities(np.bincount(labels), "class_balanced")
  ids = np.asarray(jax.jit(samplers.sample_ids, static_argnums=3)(jax.random.key(0), index, probs, 30_000))
  freq = np.bincount(labels[ids], minlength=3) / len(ids)
  np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.015)
  rare = ids[labels[ids] == 2]
  assert set(rare) == {220, 221} and abs(np.mean(rare == 220) - 0.5) < 0.05  # uniform within class


@pytest.mark.parametrize("field,value", [("decouple.tau", -1.0), ("decouple.sampler", "sqrt"),
                                         ("decouple.eval_every", 3), ("decouple.lr", -0.1),
                                         ("decouple.schedule", "step")])
def test_bad_decouple_fields_are_named(field, value):
  config = tiny_config(crt_cifar, **{field: value})
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    config_lib.validate(config)


def test_phase1_errors_name_the_field(tmp_path):
  config = tiny_config(crt_cifar, **{"decouple.phase1_workdir": str(tmp_path)})
  with pytest.raises(FileNotFoundError, match="decouple.phase1_workdir"):
    two_phase.load_phase1(config, str(tmp_path / "out"), "decouple")
  config = tiny_config(crt_cifar, **{"decouple.phase1_method": "fsa"})
  with pytest.raises(ValueError, match="decouple.phase1_method"):
    config_lib.validate(config)


def restored(workdir):
  mngr = checkpointing.manager(str(workdir), 2)
  return mngr.restore(mngr.latest_step())


def equal_trees(a, b):
  return jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


def phase2_config(module, phase1_dir, **fields):
  return tiny_config(module, **{"train.plots": False, "decouple.phase1_workdir": str(phase1_dir),
                                "decouple.steps": 10, "decouple.eval_every": 5,
                                "decouple.batch_size": 16, **fields})


def test_crt_tau_norm_lws_on_a_frozen_phase1_run(tmp_path):
  phase1_dir = tmp_path / "phase1"
  phase1_config = tiny_config(crt_cifar, **{"train.plots": False, "train.epochs": 1})
  phase1_config.method = "erm"
  train.train_and_evaluate(phase1_config, str(phase1_dir))
  p1 = restored(phase1_dir)
  backbone = {k: v for k, v in p1["params"].items() if k != "classifier"}
  w1 = np.asarray(p1["params"]["classifier"]["kernel"])
  b1 = np.asarray(p1["params"]["classifier"]["bias"])

  # cRT: re-initialised classifier re-trained; backbone and BatchNorm statistics unchanged.
  summary = run.run(phase2_config(crt_cifar, phase1_dir), str(tmp_path / "crt"))
  crt = restored(tmp_path / "crt")
  assert equal_trees({k: v for k, v in crt["params"].items() if k != "classifier"}, backbone)
  assert equal_trees(crt["batch_stats"], p1["batch_stats"])
  assert not np.allclose(crt["params"]["classifier"]["kernel"], w1)
  assert int(crt["step"]) == 10 and summary["final_epoch"] == 2
  assert summary["phase1_final_top1_error"] == json.load(open(phase1_dir / "summary.json"))["final_top1_error"]
  # Same seed, same result; the finished workdir is not trained again.
  run.run(phase2_config(crt_cifar, phase1_dir), str(tmp_path / "crt_again"))
  assert equal_trees(restored(tmp_path / "crt_again")["params"], crt["params"])
  assert run.run(phase2_config(crt_cifar, phase1_dir), str(tmp_path / "crt")) == summary

  # tau-norm: W_c / ||W_c||^tau by hand, bias and backbone untouched, nothing trained.
  summary = run.run(phase2_config(tau_norm_cifar, phase1_dir, **{"decouple.tau": 0.5}),
                         str(tmp_path / "tau"))
  tau = restored(tmp_path / "tau")
  np.testing.assert_allclose(tau["params"]["classifier"]["kernel"],
                             w1 / np.sqrt(np.linalg.norm(w1, axis=0, keepdims=True)), rtol=1e-6)
  np.testing.assert_array_equal(tau["params"]["classifier"]["bias"], b1)
  assert equal_trees({k: v for k, v in tau["params"].items() if k != "classifier"}, backbone)
  assert int(tau["step"]) == 0 and summary["final_epoch"] == 1

  # LWS: learned scales f_c folded into W and b; everything else frozen.
  run.run(phase2_config(lws_cifar, phase1_dir, **{"decouple.lr": 0.5}), str(tmp_path / "lws"))
  lws = restored(tmp_path / "lws")
  scales = np.asarray(lws["hparams"]["head"]["scales"])
  assert not np.allclose(scales, 1.0)
  np.testing.assert_allclose(lws["params"]["classifier"]["kernel"], w1 * scales, rtol=1e-6)
  np.testing.assert_allclose(lws["params"]["classifier"]["bias"], b1 * scales, rtol=1e-6)
  assert equal_trees({k: v for k, v in lws["params"].items() if k != "classifier"}, backbone)

  # Resumed phase II equals an uninterrupted one: stopped after round 1 of 2, the same command again.
  constant = {"decouple.schedule": "constant"}
  straight = run.run(phase2_config(crt_cifar, phase1_dir, **constant), str(tmp_path / "straight"))
  run.run(phase2_config(crt_cifar, phase1_dir, **constant, **{"decouple.steps": 5}), str(tmp_path / "resumed"))
  resumed = run.run(phase2_config(crt_cifar, phase1_dir, **constant), str(tmp_path / "resumed"))
  a, b = restored(tmp_path / "resumed"), restored(tmp_path / "straight")
  assert int(a["step"]) == int(b["step"]) == 10
  assert equal_trees((a["params"], a["hparams"], a["opt_state"]), (b["params"], b["hparams"], b["opt_state"]))
  assert resumed == straight
