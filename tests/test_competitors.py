"""Competitors: logit-adjusted loss, balanced softmax and post-hoc adjustment by hand; BBN's model,
alpha schedule, step, CLI run and post-hoc adjustment of its checkpoint."""

import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import balanced_softmax_cifar
from configs import bbn_cifar
from configs import logit_adjust_cifar
from configs import posthoc_la_cifar
from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import losses
from lt_jax import models
from lt_jax import run
from lt_jax import train_state as ts
from lt_jax.methods import bbn as bbn_method
from lt_jax.models import bbn as bbn_model
from tests.conftest import step_setup
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = np.array([60.0, 25.0, 10.0, 5.0])


def numpy_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels]


def random_logits(seed=0, n=6):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, len(COUNTS))).astype(np.float32), rng.integers(0, len(COUNTS), n)


# --- Losses ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_logit_adjusted_loss_by_hand(tau):
  logits, labels = random_logits()
  loss_config = tiny_config(logit_adjust_cifar, **{"loss.la_tau": tau}).loss
  values, weights = losses.make_base_loss(loss_config, COUNTS)(jnp.asarray(logits), jnp.asarray(labels))
  pi = COUNTS / COUNTS.sum()
  # -log( pi_y^tau e^{z_y} / sum_j pi_j^tau e^{z_j} )
  scores = pi**tau * np.exp(logits.astype(np.float64))
  expected = -np.log(scores[np.arange(len(labels)), labels] / scores.sum(axis=1))
  np.testing.assert_allclose(values, expected, rtol=1e-5)
  np.testing.assert_array_equal(weights, np.ones(len(labels)))
  # Class weights (e.g. DRW) are PyTorch's weight=, as for ce.
  w = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
  _, weights = losses.make_base_loss(loss_config, COUNTS)(jnp.asarray(logits), jnp.asarray(labels), w)
  np.testing.assert_array_equal(weights, w[labels])


def test_balanced_softmax_by_hand():
  logits, labels = random_logits(1)
  loss_config = tiny_config(balanced_softmax_cifar).loss
  values, _ = losses.make_base_loss(loss_config, COUNTS)(jnp.asarray(logits), jnp.asarray(labels))
  scores = COUNTS * np.exp(logits.astype(np.float64))  # n_j e^{z_j}
  expected = -np.log(scores[np.arange(len(labels)), labels] / scores.sum(axis=1))
  np.testing.assert_allclose(values, expected, rtol=1e-5)
  # The logit-adjusted loss at tau = 1 is the same loss (log pi = log n - log N).
  la = tiny_config(logit_adjust_cifar, **{"loss.la_tau": 1.0}).loss
  la_values, _ = losses.make_base_loss(la, COUNTS)(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(values, la_values, rtol=1e-5)
  # ... and not plain CE.
  assert not np.allclose(values, numpy_ce(logits, labels), rtol=1e-3)


def test_posthoc_adjustment_by_hand():
  logits, _ = random_logits(2)
  adjusted = np.asarray(losses.posthoc_logit_adjustment(jnp.asarray(logits), COUNTS, 0.7))
  np.testing.assert_allclose(adjusted, logits - 0.7 * np.log(COUNTS / COUNTS.sum()), rtol=1e-6)
  # A near tie goes to the rarer class after adjustment.
  tie = np.array([[1.0, 0.0, 0.0, 0.9]], np.float32)
  assert np.argmax(tie) == 0
  assert np.argmax(losses.posthoc_logit_adjustment(jnp.asarray(tie), COUNTS, 1.0)) == 3
  np.testing.assert_array_equal(losses.posthoc_logit_adjustment(jnp.asarray(tie), COUNTS, 0.0), tie)


@pytest.mark.parametrize("module,field,value", [(logit_adjust_cifar, "loss.la_tau", -1.0),
                                                (posthoc_la_cifar, "decouple.la_tau", -0.5),
                                                (logit_adjust_cifar, "loss.name", "logit_adjusted"),
                                                (bbn_cifar, "model.name", "resnet32")])
def test_bad_fields_are_named(module, field, value):
  config = tiny_config(module, **{field: value})
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    config_lib.validate(config)
    losses.make_base_loss(config.loss, COUNTS)


def test_bbn_model_field_errors():
  cfg = ml_collections.ConfigDict(dict(name="bbn_resnet8", width=2, classifier="linear",
                                       bbn_branch_blocks=2, bbn_mix_scale=2.0))
  with pytest.raises(ValueError, match=r"model\.bbn_branch_blocks"):
    models.get_model(cfg, 4)
  cfg.name = "bbn_resnet9"
  with pytest.raises(ValueError, match="6n"):
    models.get_model(cfg, 4)


# --- BBN -------------------------------------------------------------------------------------------

def test_cumulative_alpha_schedule():
  alphas = np.asarray([bbn_method.cumulative_alpha(t, 200) for t in (0, 50, 100, 150, 199)])
  np.testing.assert_allclose(alphas, [1.0, 0.9375, 0.75, 0.4375, 1 - 0.995**2], rtol=1e-5)
  traced = jax.jit(bbn_method.cumulative_alpha, static_argnums=1)
  np.testing.assert_allclose([float(traced(jnp.int32(t), 3)) for t in (0, 1, 2, 3)],
                             [1.0, 8 / 9, 5 / 9, 0.0], rtol=1e-6, atol=1e-7)


def bbn_net(branch_blocks=1, depth=8, mix_scale=2.0):
  cfg = ml_collections.ConfigDict(dict(name=f"bbn_resnet{depth}", width=2, classifier="linear",
                                       bbn_branch_blocks=branch_blocks, bbn_mix_scale=mix_scale))
  model = models.get_model(cfg, len(COUNTS))
  variables = models.init_variables(model, jax.random.key(0), (1, 8, 8, 1))
  return model, variables


@pytest.mark.parametrize("branch_blocks", [1, 2])
def test_bbn_branches_share_stages_1_2_and_own_stage_3(branch_blocks):
  model, variables = bbn_net(branch_blocks, depth=14)  # ResNet-14: n = 2 blocks per stage
  params = variables["params"]
  assert set(params) == {"trunk", "conventional", "rebalancing", "classifier"}
  trunk_blocks = {k for k in params["trunk"] if k.startswith("stage")}
  assert {f"stage{k}_block{i}" for k in (1, 2) for i in (0, 1)} <= trunk_blocks
  own = {f"stage3_block{i}" for i in range(2 - branch_blocks, 2)}
  assert trunk_blocks == {f"stage{k}_block{i}" for k in (1, 2, 3) for i in (0, 1)} - own
  assert set(params["conventional"]) == set(params["rebalancing"]) == own
  for block in own:  # separately initialised copies (BN starts at gamma = 1, beta = 0 in both)
    for conv in ("conv1", "conv2"):
      assert not np.allclose(params["conventional"][block][conv]["kernel"],
                             params["rebalancing"][block][conv]["kernel"])
  assert params["classifier"]["kernel"].shape == (2 * 8, len(COUNTS))  # [f_c, f_r], 4w each
  # One copy of the shared blocks: the plain ResNet-14, a second copy of the branch blocks, and
  # the classifier's 4w extra inputs.
  plain = models.get_model(ml_collections.ConfigDict(dict(name="resnet14", width=2, classifier="linear")), 4)
  plain_count = models.count_params(models.init_variables(plain, jax.random.key(0), (1, 8, 8, 1))["params"])
  assert models.count_params(params) == plain_count + models.count_params(params["conventional"]) + 8 * 4


def branch_features(model, variables, name, images):
  """Pooled features of one branch, computed from the parts by hand (eval mode)."""
  parts = dict(stage_sizes=model.stage_sizes, width=model.width, branch_blocks=model.branch_blocks)
  trunk = bbn_model.Trunk(**parts).apply(
      {"params": variables["params"]["trunk"], "batch_stats": variables["batch_stats"]["trunk"]},
      images, train=False)
  maps = bbn_model.Branch(**parts).apply(
      {"params": variables["params"][name], "batch_stats": variables["batch_stats"][name]}, trunk,
      train=False)
  return np.asarray(maps, np.float64).mean(axis=(1, 2))


@pytest.mark.parametrize("mix_scale", [2.0, 1.0])
def test_bbn_eval_output_is_the_half_half_mix(mix_scale):
  model, variables = bbn_net(mix_scale=mix_scale)
  # Non-trivial running statistics, different in the two branches.
  stats = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 * (len(jax.tree_util.keystr(path)) % 7), variables["batch_stats"])
  variables = {**variables, "batch_stats": stats}
  rng = np.random.default_rng(0)
  x, x_r = (rng.normal(size=(5, 8, 8, 1)).astype(np.float32) for _ in range(2))
  kernel = np.asarray(variables["params"]["classifier"]["kernel"], np.float64)
  bias = np.asarray(variables["params"]["classifier"]["bias"], np.float64)
  w_c, w_r = kernel[:8], kernel[8:]
  f_c = branch_features(model, variables, "conventional", x)
  f_r = branch_features(model, variables, "rebalancing", x)
  expected = mix_scale * (0.5 * f_c @ w_c + 0.5 * f_r @ w_r) + bias
  np.testing.assert_allclose(model.apply(variables, x, train=False), expected, rtol=1e-4, atol=1e-5)
  # Training-style call: x through the conventional branch, x_r through the re-balancing one.
  f_r2 = branch_features(model, variables, "rebalancing", x_r)
  expected = mix_scale * (0.3 * f_c @ w_c + 0.7 * f_r2 @ w_r) + bias
  logits, features = model.apply(variables, x, train=False, alpha=0.3, rebalanced_images=x_r,
                                 return_features=True)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
  assert features.shape[-1] == 16  # the classifier on the pooled map is the logits (decoupling)
  pooled_logits = np.asarray(features, np.float64).mean(axis=(1, 2)) @ kernel + bias
  np.testing.assert_allclose(logits, pooled_logits, rtol=1e-4, atol=1e-5)


def test_bbn_alpha_one_ignores_the_rebalancing_branch():
  model, variables = bbn_net()
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), jnp.float32)
  labels = jnp.array([0, 1, 2, 3])

  @jax.jit
  @jax.grad
  def grad(params, alpha):
    logits, _ = ts.forward(model, params, variables["batch_stats"], x, train=True, alpha=alpha,
                           rebalanced_images=x[::-1])
    return jnp.mean(losses.cross_entropy(logits, labels))

  grads = grad(variables["params"], 1.0)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["rebalancing"]))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["conventional"]))
  grads = grad(variables["params"], 0.0)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["conventional"]))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["rebalancing"]))


def test_bbn_step_loss_by_hand_and_params_change():
  config = tiny_config(bbn_cifar)
  ctx, method, state, batch = step_setup(config)
  assert method.train_step is bbn_method.train_step and method.extra_batches(config) == {"reversed": "reversed"}
  rng = np.random.default_rng(5)
  batch = {**batch, "reversed_images": jnp.asarray(rng.normal(size=batch["images"].shape), jnp.float32),
           "reversed_labels": jnp.array([3, 3, 2, 3, 1, 2], jnp.int32),
           "reversed_ids": jnp.arange(6, dtype=jnp.int32)}
  state = state.replace(step=jnp.asarray(2 * ctx.steps_per_epoch, jnp.int32))  # epoch 2 of 3
  alpha = 1 - (2 / 3) ** 2

  @jax.jit
  def step_and_logits(state, batch):
    logits, _ = ts.forward(ctx.model, state.params, state.batch_stats, batch["images"], train=True,
                           alpha=alpha, rebalanced_images=batch["reversed_images"])
    return method.train_step(state, batch, ctx, None), logits

  (new_state, metrics), logits = step_and_logits(state, batch)
  expected = (alpha * numpy_ce(logits, np.asarray(batch["labels"])).mean()
              + (1 - alpha) * numpy_ce(logits, np.asarray(batch["reversed_labels"])).mean())
  np.testing.assert_allclose(float(metrics["alpha"]), alpha, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-4)
  assert int(new_state.step) == int(state.step) + 1
  for name in ("trunk", "conventional", "rebalancing", "classifier"):
    assert not jax.tree.all(jax.tree.map(np.allclose, new_state.params[name], state.params[name])), name
  assert not jax.tree.all(jax.tree.map(np.allclose, new_state.batch_stats, state.batch_stats))


def restored(workdir):
  mngr = checkpointing.manager(str(workdir), 2)
  return mngr.restore(mngr.latest_step())


def test_bbn_cli_smoke_run_then_posthoc_adjustment(tmp_path):
  workdir = tmp_path / "bbn"
  args = [sys.executable, "-m", "lt_jax.main", "--config=configs/bbn_cifar.py:smoke",
          f"--workdir={workdir}", "--config.train.plots=False", "--config.train.epochs=2"]
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LT_JAX_"))}
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["final_epoch"] == 2 and 0 <= summary["final_top1_error"] <= 100
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  np.testing.assert_allclose([r["alpha"] for r in records if r["kind"] == "train"], [1.0, 0.75], rtol=1e-6)

  # Post-hoc logit adjustment of the BBN checkpoint: bias b - tau log pi, everything else kept.
  config = tiny_config(posthoc_la_cifar, **{"train.plots": False, "decouple.phase1_workdir": str(workdir),
                                            "decouple.la_tau": 0.8})
  phase2 = run.run(config, str(tmp_path / "posthoc"))
  assert phase2["phase1_final_top1_error"] == summary["final_top1_error"]
  counts = np.asarray(json.loads((workdir / "data_selection.json").read_text())["counts"]["train"], np.float64)
  before, after = restored(workdir)["params"], restored(tmp_path / "posthoc")["params"]
  np.testing.assert_allclose(after["classifier"]["bias"],
                             before["classifier"]["bias"] - 0.8 * np.log(counts / counts.sum()), rtol=1e-5)
  flat_before, flat_after = flax.traverse_util.flatten_dict(before), flax.traverse_util.flatten_dict(after)
  assert all(np.array_equal(flat_before[k], flat_after[k])
             for k in flat_before if k != ("classifier", "bias"))
