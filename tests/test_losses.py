"""Losses against hand computations in numpy and the peers' numbers (protocols.md C.1, C.2, C.4)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lt_jax import losses
from lt_jax import train

# CIFAR-10-LT counts of the LDAM protocol (protocols.md A.2).
COUNTS_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
COUNTS_IF10 = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
COUNTS_JAM_IF100 = [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49]


def loss_config(**fields):
  base = {"name": "ce", "reweight": "none", "cb_beta": 0.9999, "drw_epoch": -1, "focal_gamma": 1.0,
          "ldam_max_m": 0.5, "ldam_s": 30.0}
  return ml_collections.ConfigDict({**base, **fields})


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 3, 1], np.int32)
  return logits, labels


def numpy_ce(logits, labels):
  z = logits.astype(np.float64)
  log_probs = z - z.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  return -log_probs[np.arange(len(labels)), labels]


def test_cross_entropy(batch):
  logits, labels = batch
  np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
                             numpy_ce(logits, labels), rtol=1e-5)
  half = losses.cross_entropy(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(labels))
  assert half.dtype == jnp.float32


def test_weighted_mean():
  assert losses.weighted_mean(jnp.array([1.0, 2.0, 4.0]), jnp.array([1.0, 0.0, 3.0])) == pytest.approx(13 / 4)
  assert losses.weighted_mean(jnp.array([1.0, 2.0, 6.0]), jnp.ones(3)) == pytest.approx(3.0)


@pytest.mark.parametrize("counts, expected", [
    (COUNTS_IF100, [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]),
    (COUNTS_IF10, [0.292, 0.358, 0.444, 0.556, 0.700, 0.886, 1.127, 1.438, 1.842, 2.359]),
    (COUNTS_JAM_IF100, [0.0502, 0.0763, 0.1201, 0.1935, 0.3162, 0.5208, 0.8636, 1.4389, 2.3859, 4.0345]),
])
def test_class_balanced_weights_match_the_peers(counts, expected):
  weights = losses.class_balanced_weights(counts, 0.9999)
  np.testing.assert_allclose(weights, expected, atol=6e-4)
  assert weights.dtype == np.float64 and weights.sum() == pytest.approx(10.0)


def test_class_balanced_weights_formula_and_limits():
  counts, beta = np.array([8, 4, 1]), 0.5
  raw = (1 - beta) / (1 - beta**counts)  # 0.5/(1-1/256), 0.5/(1-1/16), 1
  np.testing.assert_allclose(losses.class_balanced_weights(counts, beta), raw / raw.sum() * 3)
  np.testing.assert_array_equal(losses.class_balanced_weights(COUNTS_IF100, 0.0), np.ones(10))
  with pytest.raises(ValueError, match="loss.cb_beta=1.0"):
    losses.class_balanced_weights(COUNTS_IF100, 1.0)
  with pytest.raises(ValueError, match="positive"):
    losses.class_balanced_weights([5, 0], 0.9)


@pytest.mark.parametrize("counts, expected", [
    (COUNTS_IF100, [0.158, 0.180, 0.204, 0.232, 0.264, 0.300, 0.341, 0.387, 0.441, 0.500]),
    (COUNTS_IF10, [0.281, 0.300, 0.320, 0.341, 0.363, 0.387, 0.413, 0.440, 0.469, 0.500]),
])
def test_ldam_margins_match_the_peers(counts, expected):
  np.testing.assert_allclose(losses.ldam_margins(counts, 0.5), expected, atol=6e-4)
  # The LDAM code's form: C' / n_j^(1/4) with C' = max_m / max_k n_k^(-1/4).
  m = 1 / np.sqrt(np.sqrt(np.asarray(counts, np.float64)))
  np.testing.assert_allclose(losses.ldam_margins(counts, 0.5), m * (0.5 / m.max()), rtol=1e-12)


def test_ldam_logits_shift_only_the_target():
  logits = jnp.array([[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]])
  margins = np.array([0.1, 0.2, 0.3])
  out = losses.ldam_logits(logits, jnp.array([2, 0]), margins, 10.0)
  np.testing.assert_allclose(out, [[10.0, 20.0, 27.0], [4.0, -5.0, 0.0]], rtol=1e-6)


def numpy_focal(logits, labels, gamma, class_weights=None):
  values = numpy_ce(logits, labels)
  if class_weights is not None:
    values = np.asarray(class_weights)[labels] * values
  return (1 - np.exp(-values))**gamma * values


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_loss(batch, gamma):
  logits, labels = batch
  z, y = jnp.asarray(logits), jnp.asarray(labels)
  plain = losses.focal_loss(z, y, gamma)
  np.testing.assert_allclose(plain, numpy_focal(logits, labels, gamma), rtol=1e-5, atol=1e-7)
  # Without weights p is the softmax probability of the true class (Lin et al.).
  p = jax.nn.softmax(z)[jnp.arange(6), y]
  np.testing.assert_allclose(plain, (1 - p)**gamma * -jnp.log(p), rtol=1e-4)
  w = np.array([0.5, 1.0, 2.0, 4.0])
  np.testing.assert_allclose(losses.focal_loss(z, y, gamma, jnp.asarray(w)),
                             numpy_focal(logits, labels, gamma, w), rtol=1e-5, atol=1e-7)


def test_make_base_loss_ce_is_pytorch_weighted_cross_entropy(batch):
  logits, labels = batch
  w = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  per_sample_loss = losses.make_base_loss(loss_config(name="ce"), [8, 4, 2, 1])
  values, weights = per_sample_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  ce = numpy_ce(logits, labels)
  np.testing.assert_allclose(values, ce, rtol=1e-5)
  np.testing.assert_allclose(weights, w[labels])
  # PyTorch F.cross_entropy(weight=w, reduction='mean') = sum_i w_{y_i} CE_i / sum_i w_{y_i}.
  assert losses.weighted_mean(values, weights) == pytest.approx(np.sum(w[labels] * ce) / np.sum(w[labels]),
                                                                rel=1e-5)
  _, unweighted = per_sample_loss(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_array_equal(unweighted, np.ones(6))


def test_make_base_loss_focal_weights_inside_and_plain_mean(batch):
  logits, labels = batch
  w = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  per_sample_loss = losses.make_base_loss(loss_config(name="focal", focal_gamma=2.0), [8, 4, 2, 1])
  values, weights = per_sample_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  expected = numpy_focal(logits, labels, 2.0, w)
  np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(weights, np.ones(6))
  assert losses.weighted_mean(values, weights) == pytest.approx(expected.mean(), rel=1e-5)


def test_make_base_loss_ldam(batch):
  logits, labels = batch
  counts = [16, 8, 2, 1]
  w = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  cosines = np.tanh(logits)  # the cosine classifier's range
  per_sample_loss = losses.make_base_loss(loss_config(name="ldam", ldam_max_m=0.5, ldam_s=30.0), counts)
  values, weights = per_sample_loss(jnp.asarray(cosines), jnp.asarray(labels), jnp.asarray(w))
  margins = 0.5 * (1.0 / np.asarray(counts, np.float64))**0.25  # n_min = 1
  adjusted = cosines.astype(np.float64).copy()
  adjusted[np.arange(6), labels] -= margins[labels]
  np.testing.assert_allclose(values, numpy_ce(30.0 * adjusted, labels), rtol=1e-5)
  np.testing.assert_allclose(weights, w[labels])


def numpy_sigmoid_focal(logits, labels, gamma):
  """Cui et al.'s per-sample loss: sum_j (1 - p_t,j)^gamma (-log p_t,j), one-vs-all sigmoids."""
  z = logits.astype(np.float64)
  y = np.eye(z.shape[1])[labels]
  p = 1.0 / (1.0 + np.exp(-z))
  p_t = np.where(y == 1, p, 1.0 - p)
  return ((1.0 - p_t)**gamma * -np.log(p_t)).sum(-1)


def test_sigmoid_focal_hand_values():
  # z = 0 everywhere: p_t = 1/2 for each of the C sigmoids, so l = C (1/2)^gamma log 2.
  zeros = jnp.zeros((1, 3))
  for gamma in (0.0, 1.0, 2.0):
    assert float(losses.sigmoid_focal_loss(zeros, jnp.array([1]), gamma)[0]) == pytest.approx(
        3 * 0.5**gamma * np.log(2.0), rel=1e-6)
  # One confident right logit (z_y = 10) and the rest at -10: all p_t = sigmoid(10), tiny loss.
  z = jnp.array([[-10.0, 10.0, -10.0]])
  assert float(losses.sigmoid_focal_loss(z, jnp.array([1]), 0.0)[0]) == pytest.approx(
      3 * np.log1p(np.exp(-10.0)), rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_matches_its_formula(batch, gamma):
  logits, labels = batch
  got = losses.sigmoid_focal_loss(jnp.asarray(logits), jnp.asarray(labels), gamma)
  np.testing.assert_allclose(got, numpy_sigmoid_focal(logits, labels, gamma), rtol=1e-5)


def test_cui_reductions_divide_by_the_batch_size(batch):
  """Cui et al.: sum_i w_{y_i} l_i / B for CB softmax CE and CB sigmoid focal (not / sum_i w)."""
  logits, labels = batch
  w = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  cb_ce = losses.make_base_loss(loss_config(name="ce", cb_reduction="batch"), [8, 4, 2, 1])
  values, weights = cb_ce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  assert float(losses.weighted_mean(values, weights)) == pytest.approx(
      np.mean(w[labels] * numpy_ce(logits, labels)), rel=1e-5)
  cb_focal = losses.make_base_loss(loss_config(name="sigmoid_focal", focal_gamma=2.0), [8, 4, 2, 1])
  values, weights = cb_focal(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  np.testing.assert_array_equal(weights, np.ones(6))
  np.testing.assert_allclose(values, w[labels] * numpy_sigmoid_focal(logits, labels, 2.0), rtol=1e-5)
  with pytest.raises(ValueError, match="loss.cb_reduction='mean' is unknown"):
    losses.make_base_loss(loss_config(cb_reduction="mean"), [4, 2])


def test_sigmoid_bias_init_starts_every_sigmoid_at_one_over_c():
  params = {"classifier": {"kernel": jnp.ones((3, 10)), "bias": jnp.full((10,), 0.3)}, "conv": {}}
  biased = train.sigmoid_bias_init(params, 10)
  np.testing.assert_allclose(jax.nn.sigmoid(biased["classifier"]["bias"]), 0.1, rtol=1e-6)
  np.testing.assert_array_equal(biased["classifier"]["kernel"], params["classifier"]["kernel"])
  with pytest.raises(ValueError, match="model.sigmoid_bias_init=True needs"):
    train.sigmoid_bias_init({"classifier": {"kernel": jnp.ones((3, 10))}}, 10)


@pytest.mark.parametrize("fields, match", [
    ({"name": "hinge"}, "loss.name='hinge' is unknown.*'ce', 'focal', 'ldam'"),
    ({"name": "focal", "focal_gamma": -1.0}, "loss.focal_gamma"),
    ({"name": "ldam", "ldam_s": 0.0}, "loss.ldam_s"),
])
def test_make_base_loss_rejects_bad_fields(fields, match):
  with pytest.raises(ValueError, match=match):
    losses.make_base_loss(loss_config(**fields), [4, 2])


def test_class_weights_switch_at_drw_epoch_under_jit():
  config = loss_config(reweight="cb", drw_epoch=160)
  weights_at = jax.jit(lambda epoch: losses.class_weights_at(config, COUNTS_IF100, epoch))
  balanced = losses.class_balanced_weights(COUNTS_IF100, 0.9999)
  for epoch, expected in ((0, np.ones(10)), (159, np.ones(10)), (160, balanced), (199, balanced)):
    np.testing.assert_allclose(weights_at(jnp.int32(epoch)), expected, rtol=1e-6, err_msg=str(epoch))
  assert weights_at._cache_size() == 1  # one compile for every epoch
  always = losses.class_weights_at(loss_config(reweight="cb", drw_epoch=-1), COUNTS_IF100, 0)
  np.testing.assert_allclose(always, balanced, rtol=1e-6)
  none = losses.class_weights_at(loss_config(reweight="none", drw_epoch=160), COUNTS_IF100, 170)
  np.testing.assert_array_equal(none, np.ones(10))
  assert none.dtype == jnp.float32
  with pytest.raises(ValueError, match="loss.reweight='inverse'.*'none', 'cb'"):
    losses.class_weights_at(loss_config(reweight="inverse"), COUNTS_IF100, 0)
