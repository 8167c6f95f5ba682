"""Models: parameter counts, shapes, the features -> logits contract, modulation, PyTorch-parity init."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lt_jax import models
from lt_jax.models import layers
from lt_jax.models import lenet


def model_config(name, width=0, classifier="linear"):
  return ml_collections.ConfigDict({"name": name, "width": width, "classifier": classifier})


def abstract_params(model, input_shape):
  """Parameter shapes from jax.eval_shape: nothing is materialised or compiled."""
  init = lambda rng: model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
  return jax.eval_shape(init, jax.random.key(0))["params"]


def images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def all_points(model, n, gamma_fn, beta_fn):
  return {p: (gamma_fn((n, c)), beta_fn((n, c))) for p, c in model.modulation_points().items()}


def random_modulation(model, n, seed=1):
  rng = np.random.default_rng(seed)
  return all_points(model, n, lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s), jnp.float32),
                    lambda s: jnp.asarray(rng.normal(0.0, 0.5, s), jnp.float32))


class Setup:
  """A model, its variables and a batch, built once per module."""

  def __init__(self, model, input_shape, seed=0):
    self.model = model
    self.x = images(input_shape, seed)
    self.variables = models.init_variables(model, jax.random.key(seed), (1, *input_shape[1:]))
    self.params = self.variables["params"]

  def apply(self, train=False, **kwargs):
    if train and "batch_stats" in self.variables:
      out, _ = self.model.apply(self.variables, self.x, train=True, mutable=["batch_stats"], **kwargs)
      return out
    return self.model.apply(self.variables, self.x, train=train, **kwargs)


@pytest.fixture(scope="module", params=["linear", "cosine"])
def resnet(request):
  """ResNet-8 of base width 4 on 8x8x3 images, 5 classes."""
  return Setup(models.get_model(model_config("resnet8", width=4, classifier=request.param), 5), (4, 8, 8, 3))


@pytest.fixture(scope="module")
def tiny_lenet():
  """The paper's LeNet (width 6) on 28x28x1 images, 10 classes."""
  return Setup(models.get_model(model_config("lenet"), 10), (3, 28, 28, 1))


# --- Names and sizes -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, num_classes, classifier, expected", [
    ("resnet32", 10, "linear", 464_154),
    ("resnet32", 10, "cosine", 464_144),
    ("resnet32", 100, "linear", 470_004),
    ("resnet18", 10, "linear", 11_173_962),
    ("resnet34", 10, "linear", 21_282_122),
    ("lenet", 10, "linear", 30_986),
])
def test_parameter_counts(name, num_classes, classifier, expected):
  model = models.get_model(model_config(name, classifier=classifier), num_classes)
  shape = (1, 28, 28, 1) if name == "lenet" else (1, 32, 32, 3)
  assert models.count_params(abstract_params(model, shape)) == expected


def test_resnet32_backbone_has_463504_parameters():
  params = abstract_params(models.get_model(model_config("resnet32"), 10), (1, 32, 32, 3))
  assert models.count_params({k: v for k, v in params.items() if k != "classifier"}) == 463_504


@pytest.mark.parametrize("name, stage_sizes, width, shortcut", [
    ("resnet8", (1, 1, 1), 16, "option_a"),
    ("resnet20", (3, 3, 3), 16, "option_a"),
    ("resnet56", (9, 9, 9), 16, "option_a"),
    ("resnet110", (18, 18, 18), 16, "option_a"),
    ("resnet18", (2, 2, 2, 2), 64, "projection"),
    ("resnet34", (3, 4, 6, 3), 64, "projection"),
])
def test_resnet_names(name, stage_sizes, width, shortcut):
  model = models.get_model(model_config(name), 10)
  assert (tuple(model.stage_sizes), model.width, model.shortcut) == (stage_sizes, width, shortcut)
  assert models.get_model(model_config(name, width=4), 10).width == 4


@pytest.mark.parametrize("fields, match", [
    ({"name": "resnet10"}, "6n \\+ 2"),
    ({"name": "resnet2"}, "6n \\+ 2"),
    ({"name": "vgg16"}, "model.name='vgg16' is unknown.*resnet18.*lenet"),
    ({"name": "resnet32", "classifier": "arcface"}, "model.classifier='arcface'.*'linear', 'cosine'"),
    ({"name": "resnet32", "width": -1}, "model.width=-1"),
])
def test_bad_model_config_raises(fields, match):
  config = model_config(**fields)
  with pytest.raises(ValueError, match=match):
    models.get_model(config, 10)


def test_modulation_points():
  assert models.get_model(model_config("resnet8", width=4), 10).modulation_points() == {
      "block1_conv": 4, "block1": 4, "block2_conv": 8, "block2": 8, "block3_conv": 16, "block3": 16}
  points = models.get_model(model_config("resnet18", width=4), 10).modulation_points()
  assert points == {f"block{k}{s}": 4 * 2**(k - 1) for k in range(1, 5) for s in ("_conv", "")}
  assert models.get_model(model_config("lenet"), 10).modulation_points() == {
      "conv1": 6, "conv2": 16, "conv3": 120, "fc1": 84}


def test_lenet_width_rule():
  assert lenet.channel_counts(6) == lenet.PAPER_COUNTS
  assert lenet.channel_counts(4) == (4, 11, 80, 56)
  assert lenet.channel_counts(12) == (12, 32, 240, 168)
  assert lenet.channel_counts(1) == (1, 3, 20, 14)


# --- ResNet ----------------------------------------------------------------------------------------

def test_resnet_output_and_feature_shapes(resnet):
  for train in (True, False):
    logits, features = resnet.apply(train=train, return_features=True)
    chex.assert_shape(logits, (4, 5))
    chex.assert_shape(features, (4, 2, 2, 16))  # 8x8 input, two stride-2 stages, 4w channels
    chex.assert_tree_all_finite(logits)
  chex.assert_trees_all_equal(resnet.apply(), resnet.apply(return_features=True)[0])


def test_resnet_logits_are_the_classifier_of_mean_pooled_features(resnet):
  for train in (True, False):
    logits, features = resnet.apply(train=train, return_features=True)
    pooled = features.mean(axis=(1, 2))
    head = resnet.params["classifier"]
    if resnet.model.classifier == "linear":
      expected = pooled @ head["kernel"] + head["bias"]
    else:
      kernel = head["kernel"] / jnp.linalg.norm(head["kernel"], axis=0)
      expected = pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True) @ kernel
    chex.assert_trees_all_close(logits, expected, rtol=1e-5, atol=1e-5)
    standalone = layers.Classifier(5, resnet.model.classifier).apply({"params": head}, pooled)
    chex.assert_trees_all_close(logits, standalone, rtol=1e-6, atol=1e-6)


def test_resnet_unit_modulation_is_the_identity(resnet):
  unit = all_points(resnet.model, 4, jnp.ones, jnp.zeros)
  for train in (True, False):
    chex.assert_trees_all_close(resnet.apply(train=train, modulation=unit), resnet.apply(train=train),
                                rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("point", ["block1_conv", "block1", "block2_conv", "block3_conv", "block3"])
def test_resnet_each_point_modulates(resnet, point):
  modulation = {point: random_modulation(resnet.model, 4)[point]}
  changed = resnet.apply(train=True, modulation=modulation)
  assert np.abs(np.asarray(changed - resnet.apply(train=True))).max() > 1e-3


def test_block3_modulation_scales_and_shifts_the_features(resnet):
  gamma, beta = random_modulation(resnet.model, 4)["block3"]
  _, plain = resnet.apply(return_features=True)
  _, modulated = resnet.apply(modulation={"block3": (gamma, beta)}, return_features=True)
  chex.assert_trees_all_close(modulated, plain * gamma[:, None, None, :] + beta[:, None, None, :],
                              rtol=1e-6, atol=1e-6)


def test_unknown_point_or_wrong_width_raises(resnet, tiny_lenet):
  ones = jnp.ones((4, 16))
  with pytest.raises(ValueError, match=r"\['conv3'\].*'block1_conv', 'block1'.*'block3'"):
    resnet.apply(modulation={"conv3": (ones, ones)})
  with pytest.raises(ValueError, match=r"modulation\['block1'\] needs gamma and beta of shape \(N, 4\)"):
    resnet.apply(modulation={"block1": (ones, ones)})
  with pytest.raises(ValueError, match=r"\['block3'\].*'conv1', 'conv2', 'conv3', 'fc1'"):
    tiny_lenet.apply(modulation={"block3": (ones, ones)})


def test_option_a_shortcut_matches_numpy():
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
  expected = np.zeros((2, 3, 3, 8), np.float32)
  expected[..., 2:6] = x[:, ::2, ::2, :]  # planes // 4 = 2 zero channels on each side
  np.testing.assert_array_equal(layers.option_a_shortcut(jnp.asarray(x), 8), expected)


def test_stride_two_conv_pads_one_on_every_side_like_pytorch():
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 1)).astype(np.float32)
  padded = np.pad(x[0, :, :, 0], 1)
  expected = np.array([[np.sum(padded[2 * i:2 * i + 3, 2 * j:2 * j + 3] * kernel[:, :, 0, 0])
                        for j in range(2)] for i in range(2)])
  conv = layers.conv3x3(1, 2, None, "conv")
  out = conv.apply({"params": {"kernel": jnp.asarray(kernel)}}, jnp.asarray(x))
  np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_running_averages_use_pytorch_momentum(resnet):
  _, updates = resnet.model.apply(resnet.variables, resnet.x, train=True, mutable=["batch_stats"])
  stem = jax.lax.conv_general_dilated(resnet.x, resnet.params["stem_conv"]["kernel"], (1, 1),
                                      ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stats = updates["batch_stats"]["stem_bn"]
  np.testing.assert_allclose(stats["mean"], 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_eval_mode_normalises_each_sample_independently(resnet):
  first_two = resnet.model.apply(resnet.variables, resnet.x[:2], train=False)
  chex.assert_trees_all_close(first_two, resnet.apply(train=False)[:2], rtol=1e-5, atol=1e-6)
  train_first_two, _ = resnet.model.apply(resnet.variables, resnet.x[:2], train=True, mutable=["batch_stats"])
  assert np.abs(np.asarray(train_first_two - resnet.apply(train=True)[:2])).max() > 1e-4


def test_resnet_init_matches_pytorch():
  model = models.get_model(model_config("resnet8"), 10)  # real widths 16/32/64
  variables = models.init_variables(model, jax.random.key(0), (1, 32, 32, 3))
  params = variables["params"]
  convs = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if leaf.ndim == 4}
  assert len(convs) == 7  # stem + 3 blocks x 2, option-A shortcuts have no parameters
  for name, kernel in convs.items():
    kh, kw, cin, _ = kernel.shape
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (kh * kw * cin)), rtol=0.1, err_msg=name)
  big = np.asarray(params["stage3_block0"]["conv2"]["kernel"])  # 36,864 weights
  z = big / np.sqrt(2.0 / (9 * 64))
  assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.01  # untruncated normal: 4.55% beyond 2 std
  head = params["classifier"]
  np.testing.assert_allclose(np.std(head["kernel"]), np.sqrt(2.0 / 64), rtol=0.15)
  assert np.all(np.abs(head["bias"]) <= 1 / 8) and np.abs(head["bias"]).max() > 0.05
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if leaf.ndim == 1 and "bn" in jax.tree_util.keystr(path):
      expected = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
      np.testing.assert_array_equal(leaf, expected)
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables["batch_stats"]):
    np.testing.assert_array_equal(leaf, 1.0 if jax.tree_util.keystr(path).endswith("['var']") else 0.0)


def test_classifier_parameters(resnet):
  head = resnet.params["classifier"]
  chex.assert_shape(head["kernel"], (16, 5))
  if resnet.model.classifier == "linear":
    chex.assert_shape(head["bias"], (5,))
  else:  # LDAM's NormedLinear: no bias, unit columns at init, cosine logits
    assert set(head) == {"kernel"}
    np.testing.assert_allclose(np.linalg.norm(head["kernel"], axis=0), 1.0, rtol=1e-5)
    assert np.all(np.abs(resnet.apply()) <= 1.0 + 1e-5)


def test_resnet18_tiny_shapes_and_projection_shortcuts():
  setup = Setup(models.get_model(model_config("resnet18", width=4), 3), (2, 8, 8, 3))
  logits, features = setup.apply(train=True, return_features=True)
  chex.assert_shape(logits, (2, 3))
  chex.assert_shape(features, (2, 1, 1, 32))
  assert "shortcut_conv" not in setup.params["stage1_block0"]
  chex.assert_shape(setup.params["stage2_block0"]["shortcut_conv"]["kernel"], (1, 1, 4, 8))
  assert "shortcut_conv" not in setup.params["stage2_block1"]
  modulation = random_modulation(setup.model, 2)
  assert np.abs(np.asarray(setup.apply(modulation=modulation) - setup.apply())).max() > 1e-3


def test_half_precision_compute_keeps_float32_params_and_logits():
  model = models.get_model(model_config("resnet8", width=4), 5, dtype=jnp.bfloat16)
  setup = Setup(model, (2, 8, 8, 3))
  assert {leaf.dtype for leaf in jax.tree.leaves(setup.variables)} == {jnp.dtype(jnp.float32)}
  logits, features = setup.apply(train=True, return_features=True)
  assert logits.dtype == jnp.float32 and features.dtype == jnp.bfloat16


def test_float64_parameters_give_float64_logits(x64):
  setup = Setup(models.get_model(model_config("resnet8", width=2), 3), (2, 8, 8, 1))
  variables = jax.tree.map(lambda a: a.astype(jnp.float64), setup.variables)
  logits = setup.model.apply(variables, setup.x.astype(jnp.float64), train=False)
  assert logits.dtype == jnp.float64


# --- LeNet -----------------------------------------------------------------------------------------

def test_lenet_shapes_and_no_batch_stats(tiny_lenet):
  assert set(tiny_lenet.variables) == {"params"}
  assert tiny_lenet.variables.get("batch_stats", {}) == {}
  logits, features = tiny_lenet.apply(return_features=True)
  chex.assert_shape(logits, (3, 10))
  chex.assert_shape(features, (3, 1, 1, 84))
  chex.assert_trees_all_equal(tiny_lenet.apply(train=True), tiny_lenet.apply(train=False))
  head = tiny_lenet.params["classifier"]
  chex.assert_trees_all_close(logits, features.mean(axis=(1, 2)) @ head["kernel"] + head["bias"],
                              rtol=1e-5, atol=1e-6)
  chex.assert_shape(tiny_lenet.params["conv3"]["kernel"], (3, 3, 16, 120))


def test_lenet_modulation(tiny_lenet):
  unit = all_points(tiny_lenet.model, 3, jnp.ones, jnp.zeros)
  chex.assert_trees_all_close(tiny_lenet.apply(modulation=unit), tiny_lenet.apply(), rtol=1e-6, atol=1e-6)
  plain = tiny_lenet.apply()
  for point, value in random_modulation(tiny_lenet.model, 3).items():
    assert np.abs(np.asarray(tiny_lenet.apply(modulation={point: value}) - plain)).max() > 1e-4, point
  gamma, beta = random_modulation(tiny_lenet.model, 3)["fc1"]
  _, features = tiny_lenet.apply(return_features=True)
  _, modulated = tiny_lenet.apply(modulation={"fc1": (gamma, beta)}, return_features=True)
  chex.assert_trees_all_close(modulated[:, 0, 0], features[:, 0, 0] * gamma + beta, rtol=1e-6, atol=1e-6)


def test_lenet_init_is_pytorch_default(tiny_lenet):
  for name, fan_in in (("conv1", 25), ("conv2", 150), ("conv3", 144), ("fc1", 120), ("classifier", 84)):
    for leaf in tiny_lenet.params[name].values():
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.5 * bound, name


def test_lenet_width_4_shapes():
  setup = Setup(models.get_model(model_config("lenet", width=4), 7), (2, 28, 28, 1))
  logits, features = setup.apply(return_features=True)
  chex.assert_shape(logits, (2, 7))
  chex.assert_shape(features, (2, 1, 1, 56))
  assert setup.model.modulation_points() == {"conv1": 4, "conv2": 11, "conv3": 80, "fc1": 56}
