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


def test_per_sample_generator_updates_only_the_batch_rows():
  config = tiny_config(mfm_cifar, **{"mfm.generator": "per_sample", "mfm.lr": 1.0})
  ctx, method, state, batch = step_setup(config)
  new_state, _ = method.train_step(state, batch, ctx, "meta")
  changed = np.flatnonzero(np.any(np.asarray(new_state.hparams["phi"]) != 0, axis=1))
  assert set(changed) <= set(np.asarray(batch["ids"])) and len(changed) > 0


def test_modulator_transfer_round_trip_and_spec_check(tmp_path):
  ctx, _, state, _ = step_setup(tiny_config(mfm_cifar, **{"mfm.points": ("block2", "block3")}))
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
