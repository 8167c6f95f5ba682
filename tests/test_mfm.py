"""Meta Feature Modulator: modulator outputs, the meta-gradient, evaluation without modulation,
transfer artifacts."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mfm_cifar
from lt_jax import config as config_lib
from lt_jax import bilevel
from lt_jax import programs
from lt_jax import train_state as ts
from lt_jax.methods import mfm
from lt_jax.models import modulator as modulator_lib
from tests.conftest import step_setup
from tests.conftest import tiny_config

POINTS = {"a": 3, "b": 5}


@pytest.mark.parametrize("variant", modulator_lib.VARIANTS)
def test_variants_shape_gamma_and_beta(variant):
  raw = jax.random.normal(jax.random.key(0), (4, modulator_lib.output_size(POINTS)))
  modulation = modulator_lib.split_modulation(raw, POINTS, variant)
  for name, channels in POINTS.items():
    gamma, beta = modulation[name]
    assert gamma.shape == beta.shape == (4, channels)
    if variant == "mfm":  # gamma = C softmax: positive, sums to C
      np.testing.assert_allclose(gamma.sum(-1), channels, rtol=1e-5)
      assert np.all(gamma > 0)
    if variant in ("channel_attention", "gated_attention"):
      assert np.all((gamma > 0) & (gamma < 1)) and not np.any(beta)
  zero = modulator_lib.split_modulation(jnp.zeros_like(raw), POINTS, variant)
  if variant in ("mfm", "film"):  # a zero output is the identity
    for gamma, beta in zero.values():
      np.testing.assert_allclose(gamma, 1.0, rtol=1e-6)
      assert not np.any(beta)


def test_ablations_fix_gamma_or_beta():
  raw = jax.random.normal(jax.random.key(1), (2, modulator_lib.output_size(POINTS)))
  for gamma, beta in modulator_lib.split_modulation(raw, POINTS, "mfm", zero_beta=True).values():
    assert not np.any(beta) and np.any(gamma != 1)
  for gamma, beta in modulator_lib.split_modulation(raw, POINTS, "mfm", unit_gamma=True).values():
    np.testing.assert_array_equal(gamma, 1.0)
    assert np.any(beta)


def test_weight_hashing_has_two_maps_gamma_hat_to_gamma_and_beta_hat_to_beta():
  """MFM App. A.2 / B: the MLP emits gamma-hat (m) and beta-hat (m); each is decompressed by its own
  fixed, parameter-free hash map into gamma (every point's) and beta."""
  net = modulator_lib.Modulator(tuple(POINTS.items()), hidden=7, compressed_size=4)
  params = net.init(jax.random.key(0), jnp.zeros((1, 10)))["params"]
  assert params["out"]["kernel"].shape == (7, 8)  # gamma-hat (4) and beta-hat (4), no hash weights
  params = jax.tree.map(lambda a: a + 0.1, params)
  soft = jax.nn.softmax(jax.random.normal(jax.random.key(2), (3, 10)))
  compressed = jax.nn.relu(soft @ params["hidden"]["kernel"] + params["hidden"]["bias"]) @ params["out"]["kernel"] + params["out"]["bias"]
  kappa, zeta = modulator_lib.hashing_indices(POINTS, 4)
  raw = net.apply({"params": params}, soft)
  np.testing.assert_allclose(raw, compressed[:, kappa] * zeta, rtol=1e-5)
  beta = modulator_lib.is_beta(POINTS)  # layout [gamma_a (3), beta_a (3), gamma_b (5), beta_b (5)]
  np.testing.assert_array_equal(beta, [0] * 3 + [1] * 3 + [0] * 5 + [1] * 5)
  assert kappa[~beta].max() < 4 <= kappa[beta].min()  # gamma reads gamma-hat only, beta beta-hat
  assert np.all(np.abs(zeta) == 1)
  bumped = params["out"]["bias"].at[:4].add(1.0)  # change gamma-hat only: no beta entry moves
  moved = net.apply({"params": {**params, "out": {**params["out"], "bias": bumped}}}, soft) - raw
  assert np.all(moved[:, beta] == 0) and np.all(moved[:, ~beta] != 0)


@pytest.fixture(scope="module")
def setup():
  config = tiny_config(mfm_cifar, **{"mfm.points": ("block2", "block3")})
  return step_setup(config)


def test_mfm_meta_gradient_matches_finite_differences(setup, x64):
  """d L_meta(w_hat(phi)) / d phi along random directions, float64, central differences."""
  ctx, _, state, batch = setup
  f64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
  state, batch = f64(state), f64(batch)
  phi = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(3), a.shape, a.dtype), state.hparams["phi"])
  logits, _ = ts.forward(ctx.model, state.params, state.batch_stats, batch["images"], train=True)
  soft = jax.nn.softmax(logits)

  def inner_loss(params, phi):
    out, _ = ts.forward(ctx.model, params, state.batch_stats, batch["images"], train=True,
                        modulation=mfm.modulation_for(phi, soft, batch["ids"], ctx))
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(out), batch["labels"][:, None], 1))

  def outer_loss(params):
    out, _ = ts.forward(ctx.model, params, state.batch_stats, batch["meta_images"], train=True)
    return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(out), batch["meta_labels"][:, None], 1))

  value = lambda p: bilevel.hypergradient(inner_loss, outer_loss, state.params, p, 0.5)[0]
  _, grad = bilevel.hypergradient(inner_loss, outer_loss, state.params, phi, 0.5)
  for seed in range(3):
    keys = jax.random.split(jax.random.key(10 + seed), len(jax.tree.leaves(phi)))
    direction = jax.tree.unflatten(jax.tree.structure(phi), [
        jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, jax.tree.leaves(phi))])
    h = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * h * d, phi, direction)
    numeric = (value(shifted(1)) - value(shifted(-1))) / (2 * h)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_meta_step_changes_phi_and_keeps_only_real_batch_statistics(setup):
  ctx, method, state, batch = setup
  new_state, metrics = jax.jit(lambda s, b: method.train_step(s, b, ctx, "meta"))(state, batch)
  assert float(metrics["meta_grad_norm"]) > 0
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(new_state.hparams["phi"]), jax.tree.leaves(state.hparams["phi"])))
  # The real pass runs the modulated network with the new phi; its statistics are the only ones kept.
  logits, _ = ts.forward(ctx.model, state.params, state.batch_stats, batch["images"], train=True)
  modulation = mfm.modulation_for(new_state.hparams["phi"], jax.nn.softmax(logits), batch["ids"], ctx)
  _, expected = ts.forward(ctx.model, state.params, state.batch_stats, batch["images"], train=True,
                           modulation=modulation)
  chex.assert_trees_all_close(new_state.batch_stats, expected, rtol=1e-5, atol=1e-6)


def test_evaluation_does_not_depend_on_the_modulator(setup):
  ctx, _, state, batch = setup
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1)), jnp.uint8)
  predict = lambda s: programs.predict(s.params, s.batch_stats, images, model=ctx.model, mean=np.zeros(1),
                                    std=np.ones(1), batch_size=4)
  other = state.replace(hparams={"phi": jax.tree.map(lambda a: a + 1.0, state.hparams["phi"])})
  np.testing.assert_array_equal(predict(state), predict(other))


def test_per_sample_generator_updates_only_the_batch_rows():
  config = tiny_config(mfm_cifar, **{"mfm.generator": "per_sample", "mfm.lr": 1.0})
  ctx, method, state, batch = step_setup(config)
  new_state, _ = method.train_step(state, batch, ctx, "meta")
  changed = np.flatnonzero(np.any(np.asarray(new_state.hparams["phi"]) != 0, axis=1))
  assert set(changed) <= set(np.asarray(batch["ids"])) and len(changed) > 0


def test_modulator_transfer_round_trip_and_spec_check(setup, tmp_path):
  ctx, _, state, _ = setup
  mfm.save_modulator(state.hparams["phi"], ctx, str(tmp_path))
  chex.assert_trees_all_equal(mfm.load_modulator(str(tmp_path), ctx), state.hparams["phi"])
  other = tiny_config(mfm_cifar, **{"mfm.points": ("block3",)})
  other_ctx, *_ = step_setup(other)
  with pytest.raises(ValueError, match="points"):
    mfm.load_modulator(str(tmp_path), other_ctx)
  spec = json.loads((tmp_path / "modulator" / "spec.json").read_text())
  for key, value in (("variant", "film"), ("points", dict(reversed(spec["points"].items())))):
    (tmp_path / "modulator" / "spec.json").write_text(json.dumps({**spec, key: value}))
    with pytest.raises(ValueError, match=f"its {key} is"):  # same sizes, other layout / meaning
      mfm.load_modulator(str(tmp_path), ctx)
  with pytest.raises(FileNotFoundError, match="mfm.load_modulator"):
    mfm.load_modulator(str(tmp_path / "nowhere"), ctx)


def test_unknown_point_and_optimizer_are_refused_at_load():
  with pytest.raises(ValueError, match="mfm.points"):
    config_lib.validate(tiny_config(mfm_cifar, **{"mfm.points": ("block9",)}))
  with pytest.raises(ValueError, match="mfm.optimizer"):
    config_lib.validate(tiny_config(mfm_cifar, **{"mfm.optimizer": "rmsprop"}))
