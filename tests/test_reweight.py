"""L2RW, MW-Net and class-balanced meta re-weighting steps: weights, identities, BatchNorm, jit."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cbmeta_cifar
from configs import l2rw_cifar
from configs import mwnet_cifar
from lt_jax import losses
from lt_jax import train_state as ts
from lt_jax.methods import erm
from lt_jax.methods import reweight
from tests.conftest import step_setup
from tests.conftest import tiny_config


def to_f64(tree):
  return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def test_l2rw_weights_are_clipped_normalised_and_fall_back_to_uniform():
  np.testing.assert_allclose(reweight.l2rw_weights(jnp.array([-1.0, 3.0, -3.0, 0.0])), [0.25, 0, 0.75, 0])
  np.testing.assert_allclose(reweight.l2rw_weights(jnp.array([1.0, 2.0])), [0.5, 0.5])


def test_mwnet_with_uniform_weights_reproduces_the_plain_step():
  config = tiny_config(mwnet_cifar, **{"mwnet.lr": 0.0, "mwnet.weight_decay": 0.0})
  ctx, method, state, batch = step_setup(config)
  theta = jax.tree.map(lambda a: a, state.hparams["theta"])
  theta["Dense_1"]["kernel"] = jnp.zeros_like(theta["Dense_1"]["kernel"])  # V constant: v_i = 1/B
  state = state.replace(hparams={**state.hparams, "theta": theta})
  meta_state, _ = method.train_step(state, batch, ctx, None)
  plain_state, _ = erm.train_step(state.replace(hparams={}), batch, ctx, None)
  chex.assert_trees_all_close(meta_state.params, plain_state.params, rtol=1e-5, atol=1e-6)
  # The lookahead and meta passes ran BatchNorm too; only the real pass's statistics are kept.
  chex.assert_trees_all_close(meta_state.batch_stats, plain_state.batch_stats, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("config_module", [l2rw_cifar, mwnet_cifar, cbmeta_cifar])
def test_only_the_real_pass_updates_batch_statistics(config_module):
  ctx, method, state, batch = step_setup(tiny_config(config_module))
  new_state, metrics = method.train_step(state, batch, ctx, "meta" if config_module is cbmeta_cifar else None)
  _, expected = ts.forward(ctx.model, state.params, state.batch_stats, batch["images"], train=True)
  chex.assert_trees_all_close(new_state.batch_stats, expected, rtol=1e-6, atol=1e-7)
  assert np.isfinite(float(metrics["meta_loss"]))


@pytest.mark.parametrize("config_module", [l2rw_cifar, mwnet_cifar, cbmeta_cifar])
def test_jitted_step_equals_unjitted(config_module):
  ctx, method, state, batch = step_setup(tiny_config(config_module))
  step_phase = "meta" if config_module is cbmeta_cifar else None
  eager, _ = method.train_step(state, batch, ctx, step_phase)
  jitted, _ = jax.jit(lambda s, b: method.train_step(s, b, ctx, step_phase))(state, batch)
  chex.assert_trees_all_close(eager.params, jitted.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(eager.hparams, jitted.hparams, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cbmeta_eps_gradient_is_minus_lr_times_gradient_dot_products(x64, reduction):
  """d L_meta(w_hat) / d eps_i at eps = 0 equals -alpha <grad L_meta(w_hat), grad l_i(w)> (/ B for mean).

  LeNet has no BatchNorm, so per-sample gradients are well defined.
  """
  config = tiny_config(cbmeta_cifar, **{"model.name": "lenet", "dataset.image_size": 28})
  ctx, _, state, batch = step_setup(config, image_shape=(28, 28, 1), batch_size=5)
  state, batch = to_f64(state), to_f64(batch)
  w_y = jnp.asarray(losses.class_balanced_weights(ctx.class_counts, 0.9999))[batch["labels"]]
  _, grad_eps = reweight.eps_gradient(state, batch, ctx, w_y, reduction)

  alpha = ctx.lr_fn(state.step)  # float64 under x64
  def sample_loss(params, image, label):
    logits, _ = ts.forward(ctx.model, params, {}, image[None], train=True)
    return losses.cross_entropy(logits, label[None])[0]
  per_sample = jax.vmap(jax.grad(sample_loss), in_axes=(None, 0, 0))(state.params, batch["images"], batch["labels"])
  scale = 1.0 if reduction == "sum" else 1.0 / len(w_y)
  inner_grad = jax.tree.map(lambda g: scale * jnp.tensordot(w_y, g, axes=1), per_sample)
  w_hat = jax.tree.map(lambda w, g: w - alpha * g, state.params, inner_grad)
  meta_grad = jax.grad(reweight.meta_loss_fn(state, batch, ctx))(w_hat)
  dots = sum(jnp.tensordot(g.reshape(len(w_y), -1), m.reshape(-1), axes=1)
             for g, m in zip(jax.tree.leaves(per_sample), jax.tree.leaves(meta_grad)))
  np.testing.assert_allclose(grad_eps, -alpha * scale * dots, rtol=1e-9, atol=1e-14)


def test_cbmeta_pretrain_phase_is_the_plain_mean_loss():
  ctx, method, state, batch = step_setup(tiny_config(cbmeta_cifar))
  pre, _ = method.train_step(state, batch, ctx, "pretrain")
  plain, _ = erm.train_step(state, batch, ctx, None)
  chex.assert_trees_all_close(pre.params, plain.params, rtol=1e-5, atol=1e-6)
  assert reweight.cbmeta_mode(0, ctx) == "pretrain" and reweight.cbmeta_mode(1, ctx) == "meta"


@pytest.mark.parametrize("reduction, loss_name", [("sum", "ce"), ("mean", "focal")])
def test_cbmeta_step_eps_matches_finite_differences_inside_the_warm_up(x64, monkeypatch, reduction, loss_name):
  """The eps of one real float64 step vs central differences of the lookahead objective.

  ResNet-8 with train-mode BatchNorm at epoch 2 of a 5-epoch warm-up (alpha = 0.1 * 3 / 5). The
  reference is written out with alpha and w_y exact: eps = -tau dL_meta(w_hat(eps)) / deps at
  eps = 0, w_hat(eps) = w - alpha grad_w reduce_i l_i(w) (w_{y_i} + eps_i). The step's eps is read
  off the weights w_y + eps its real update used. A float32 w_y puts it off by ~1e-5, a float32
  alpha by ~3e-8.
  """
  config = tiny_config(cbmeta_cifar, **{"optim.warmup_epochs": 5, "optim.decay_epochs": (8,),
                                         "cbmeta.lookahead_reduction": reduction, "loss.name": loss_name})
  ctx, method, state, batch = step_setup(config, batch_size=8)
  epoch = 2
  state = to_f64(state.replace(step=jnp.asarray(epoch * ctx.steps_per_epoch + 1, jnp.int32)))
  batch = to_f64(batch)
  used = {}
  weighted_step = reweight.weighted_step

  def spy(state, batch, ctx, weight_fn, **kwargs):
    used["weights"] = weight_fn(None)
    return weighted_step(state, batch, ctx, weight_fn, **kwargs)

  monkeypatch.setattr(reweight, "weighted_step", spy)
  weights = jax.jit(lambda s, b: (method.train_step(s, b, ctx, "meta"), used["weights"])[1])(state, batch)
  w_y = losses.class_balanced_weights(ctx.class_counts, config.loss.cb_beta)[np.asarray(batch["labels"])]
  eps = np.asarray(weights) - w_y

  alpha = config.optim.lr * (epoch + 1) / config.optim.warmup_epochs
  outer_loss = reweight.meta_loss_fn(state, batch, ctx, reweight.cbmeta_meta_losses(ctx))  # focal: L

  def objective(e):
    def inner_loss(params):
      weighted = reweight.training_losses(state, batch, ctx, params)[0] * (w_y + e)
      return jnp.sum(weighted) if reduction == "sum" else jnp.mean(weighted)
    grads = jax.grad(inner_loss)(state.params)
    return outer_loss(jax.tree.map(lambda w, g: w - alpha * g, state.params, grads))

  h, size = 3e-5, len(w_y)
  shifts = h * np.eye(size)
  values = jax.jit(jax.vmap(objective))(np.concatenate([shifts, -shifts]))
  expected = -config.cbmeta.tau * (values[:size] - values[size:]) / (2 * h)
  assert np.linalg.norm(expected) > 1e-6, "degenerate test: eps is ~0"
  error = np.linalg.norm(eps - expected) / np.linalg.norm(expected)
  assert error < 1e-8, f"relative error {error:.2e}\nstep  {eps}\nnumeric {expected}"


def test_cbmeta_meta_loss_options_on_ldam_cosines():
  """meta_loss 'base' = LDAM's own CE(s (z - m_y onehot)); 'scaled_ce' = CE(s z); 'ce' = CE(z)."""
  counts = [16, 8, 2, 1]
  cosines = jnp.array([[0.9, -0.2, 0.1, 0.0], [0.3, 0.4, -0.5, 0.2], [0.0, 0.1, 0.2, -0.9]])
  labels = jnp.array([0, 3, 2])
  margins = 0.5 * (1.0 / np.asarray(counts, np.float64))**0.25  # max_m 0.5, n_min = 1
  shifted = np.asarray(cosines, np.float64).copy()
  shifted[np.arange(3), np.asarray(labels)] -= margins[np.asarray(labels)]

  def ce(z):
    z = np.asarray(z, np.float64)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(3), np.asarray(labels)]

  expected = {"base": ce(30.0 * shifted), "scaled_ce": ce(30.0 * cosines), "ce": ce(cosines)}
  for kind, want in expected.items():
    config = tiny_config(cbmeta_cifar, **{"loss.name": "ldam", "cbmeta.meta_loss": kind})
    ctx = types.SimpleNamespace(config=config, class_counts=np.asarray(counts))
    got = reweight.cbmeta_meta_losses(ctx)(cosines, labels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=kind)
  assert expected["base"].mean() > expected["scaled_ce"].mean()  # margins make the target harder


def test_schedule_and_class_weights_take_the_parameters_dtype():
  """alpha and w are float32 in float32 runs, float64 (alpha exact) with float64 w under x64, and a
  float32 network stays float32 under x64 (no promotion either way)."""
  config = tiny_config(cbmeta_cifar, **{"optim.warmup_epochs": 5, "optim.decay_epochs": (8,),
                                         "loss.reweight": "cb"})
  ctx, method, state, batch = step_setup(config)
  state = state.replace(step=jnp.asarray(2 * ctx.steps_per_epoch, jnp.int32))  # epoch 2: 0.1 * 3 / 5
  weights_at = lambda: losses.class_weights_at(config.loss, ctx.class_counts, 0)
  assert ctx.lr_fn(state.step).dtype == weights_at().dtype == jnp.float32
  with jax.enable_x64(True):
    params = to_f64(state.params)
    lr = ctx.lr_fn(state.step)
    assert lr.dtype == jnp.float64
    assert ts.param_dtype(params) == jnp.float64
    assert float(lr) == pytest.approx(0.1 * 3 / 5, rel=1e-15)  # a float32 alpha is off by ~1e-8
    assert weights_at().dtype == jnp.float64
    new_state, metrics = jax.jit(lambda s, b: method.train_step(s, b, ctx, "meta"))(state, batch)
  chex.assert_trees_all_equal_dtypes(new_state.params, state.params)
  assert metrics["meta_loss"].dtype == jnp.float32
