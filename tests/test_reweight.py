"""L2RW, MW-Net and class-balanced meta re-weighting steps: weights, identities, BatchNorm, jit."""

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
  theta = jax.tree.map(lambda a: a, state.meta["theta"])
  theta["Dense_1"]["kernel"] = jnp.zeros_like(theta["Dense_1"]["kernel"])  # V constant: v_i = 1/B
  state = state.replace(meta={**state.meta, "theta": theta})
  meta_state, _ = method.train_step(state, batch, ctx, None)
  plain_state, _ = erm.train_step(state.replace(meta={}), batch, ctx, None)
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
  chex.assert_trees_all_close(eager.meta, jitted.meta, rtol=1e-5, atol=1e-6)


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

  alpha = jnp.asarray(ctx.lr_fn(state.step), jnp.float64)  # alpha * scale in float64, not float32
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
