"""Tests for lt_jax.bilevel (the bilevel core): the hypergradient against finite differences, closed forms and identities.

Float64 where a tolerance matters, scoped to the test by conftest's ``x64`` fixture
(``jax.enable_x64(True)`` as a context manager), so other test modules run in float32.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lt_jax import bilevel

NUM_CLASSES = 3


class BatchNormMLP(nn.Module):
  """Dense -> BatchNorm -> tanh -> Dense (tanh: smooth, so finite differences see no kinks)."""
  use_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(6)(x)
    if self.use_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(NUM_CLASSES)(jnp.tanh(x))


class TinyConvNet(nn.Module):
  """Two 3x3 convolutions (BatchNorm after the first), global average pooling, linear head."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(3, (3, 3))(x)
    x = jnp.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    x = jnp.tanh(nn.Conv(4, (3, 3), strides=2)(x))
    return nn.Dense(NUM_CLASSES)(jnp.mean(x, axis=(1, 2)))


class WeightNet(nn.Module):
  """MW-Net's V(l; theta): per-sample loss -> weight in (0, 1)."""

  @nn.compact
  def __call__(self, losses):
    hidden = jnp.tanh(nn.Dense(4)(losses[:, None]))
    return jax.nn.sigmoid(nn.Dense(1)(hidden))[:, 0]


def to_float64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def cross_entropy(logits, labels):
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def make_problem(model, input_shape, batch_size=8, meta_size=5, seed=0):
  """Float64 variables of ``model`` and random train / meta batches (call under x64)."""
  rng = np.random.default_rng(seed)
  batch = {
      "x": jnp.asarray(rng.normal(size=(batch_size, *input_shape))),
      "y": jnp.asarray(rng.integers(0, NUM_CLASSES, batch_size)),
      "meta_x": jnp.asarray(rng.normal(size=(meta_size, *input_shape))),
      "meta_y": jnp.asarray(np.arange(meta_size) % NUM_CLASSES),
  }
  variables = to_float64(model.init(jax.random.key(seed), batch["x"], train=False))
  chex.assert_trees_all_equal_dtypes(variables, jax.tree.map(lambda a: jnp.zeros((), jnp.float64),
                                                              variables))
  return variables, batch


def train_forward(model, params, batch_stats, x):
  """Train-mode forward: (logits, new batch_stats); BatchNorm uses the batch's statistics."""
  if not batch_stats:
    return model.apply({"params": params}, x, train=True), {}
  logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def per_sample_losses_fn(model, variables, batch):
  """w -> l_i(w), i over the training batch, one train-mode batch forward (statistics dropped)."""
  batch_stats = variables.get("batch_stats", {})
  return lambda params: cross_entropy(train_forward(model, params, batch_stats, batch["x"])[0],
                                      batch["y"])


def meta_loss_fn(model, variables, batch):
  """w -> L_meta(w): mean CE on the meta batch, train-mode BatchNorm (statistics dropped)."""
  batch_stats = variables.get("batch_stats", {})
  return lambda params: jnp.mean(cross_entropy(
      train_forward(model, params, batch_stats, batch["meta_x"])[0], batch["meta_y"]))


def tree_vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_matches_finite_differences(inner_loss, outer_loss, params, hparams, lr, directions,
                                      step=1e-5, rtol=1e-6):
  """Central differences of h -> L_meta(w_hat(h)) along each direction (leading axis) vs grad_h."""
  hypergradient = lambda h: bilevel.hypergradient(inner_loss, outer_loss, params, h, lr)
  _, grad = jax.jit(hypergradient)(hparams)
  value = jax.jit(jax.vmap(lambda h: hypergradient(h)[0]))
  shifted = lambda sign: jax.tree.map(lambda h, d: h + sign * step * d, hparams, directions)
  numeric = (value(shifted(1.0)) - value(shifted(-1.0))) / (2 * step)
  analytic = jax.vmap(lambda d: tree_vdot(grad, d))(directions)
  assert np.linalg.norm(analytic) > 1e-4, "degenerate test: the hypergradient is ~0"
  error = np.linalg.norm(numeric - analytic) / np.linalg.norm(analytic)
  assert error < rtol, f"relative error {error:.2e}\nanalytic {analytic}\nnumeric  {numeric}"


def random_directions(tree, count, seed):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(tree)))
  leaves = [jax.random.normal(k, (count, *a.shape), a.dtype)
            for k, a in zip(keys, jax.tree.leaves(tree))]
  return jax.tree.unflatten(jax.tree.structure(tree), leaves)


# --- lookahead -------------------------------------------------------------------------------------


def test_lookahead_params_is_plain_sgd_on_every_leaf_and_keeps_dtypes():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
            "scale": jnp.full((2,), 2.0, jnp.bfloat16)}
  grads = {"dense": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.arange(3.0)},
           "scale": jnp.ones((2,), jnp.bfloat16)}
  w_hat = bilevel.lookahead_params(params, grads, jnp.float32(0.1))
  chex.assert_trees_all_close(w_hat, {"dense": {"kernel": jnp.full((2, 3), 0.95),
                                                "bias": jnp.array([0.0, -0.1, -0.2])},
                                      "scale": jnp.full((2,), 1.9, jnp.bfloat16)}, rtol=1e-2)
  chex.assert_trees_all_equal_dtypes(w_hat, params)


def test_lookahead_is_one_sgd_step_on_the_inner_loss(x64):
  model = BatchNormMLP()
  variables, batch = make_problem(model, (4,))
  losses = per_sample_losses_fn(model, variables, batch)
  eps = jnp.linspace(0.5, 1.5, 8)
  inner_loss = lambda params, eps: jnp.mean(eps * losses(params))
  grads = jax.grad(inner_loss)(variables["params"], eps)
  expected = jax.tree.map(lambda w, g: w - 0.3 * g, variables["params"], grads)
  chex.assert_trees_all_close(bilevel.lookahead(inner_loss, variables["params"], eps, 0.3), expected,
                              rtol=1e-14)


# --- 1. finite differences -------------------------------------------------------------------------


def test_hypergradient_per_sample_eps_matches_finite_differences_mlp_batchnorm(x64):
  model = BatchNormMLP()
  variables, batch = make_problem(model, (4,))
  losses = per_sample_losses_fn(model, variables, batch)
  eps = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, 8))
  assert_matches_finite_differences(
      lambda params, eps: jnp.sum(eps * losses(params)), meta_loss_fn(model, variables, batch),
      variables["params"], eps, lr=0.5, directions=jnp.eye(8))  # every coordinate


def test_hypergradient_weight_net_matches_finite_differences_mlp_batchnorm(x64):
  """MW-Net: weights V(l_i; theta) normalised by their sum, l_i not detached (V's input too)."""
  model, vnet = BatchNormMLP(), WeightNet()
  variables, batch = make_problem(model, (4,))
  losses = per_sample_losses_fn(model, variables, batch)
  theta = to_float64(vnet.init(jax.random.key(7), jnp.ones(8)))["params"]

  def inner_loss(params, theta):
    values = losses(params)
    weights = vnet.apply({"params": theta}, values)
    return jnp.sum(values * weights / jnp.sum(weights))

  assert_matches_finite_differences(inner_loss, meta_loss_fn(model, variables, batch),
                                    variables["params"], theta, lr=0.5,
                                    directions=random_directions(theta, 6, seed=3))


def test_hypergradient_matches_finite_differences_conv_net(x64):
  model = TinyConvNet()
  variables, batch = make_problem(model, (6, 6, 2), batch_size=6, meta_size=4)
  losses = per_sample_losses_fn(model, variables, batch)
  eps = jnp.asarray(np.random.default_rng(2).uniform(0.5, 1.5, 6))
  assert_matches_finite_differences(
      lambda params, eps: jnp.sum(eps * losses(params)), meta_loss_fn(model, variables, batch),
      variables["params"], eps, lr=0.5, directions=jnp.eye(6))


# --- 2. closed form --------------------------------------------------------------------------------


def test_hypergradient_matches_closed_form_on_weighted_least_squares(x64):
  """One SGD step on L(w, b; eps, lam) = sum_i eps_i r_i^2 / 2 + lam |w|^2 / 2.

  With r_i = x_i.w + b - y_i: w_hat = w - alpha (X^T (eps * r) + lam w),
  b_hat = b - alpha sum_i eps_i r_i;
  L_meta = |X_m w_hat + b_hat - y_m|^2 / (2 M), with gradient (g_w, g_b) at w_hat, so
  dL_meta/deps_i = -alpha r_i (x_i.g_w + g_b) and dL_meta/dlam = -alpha w.g_w.
  """
  rng = np.random.default_rng(0)
  n, m, d, alpha = 7, 5, 3, 0.2
  x, y = rng.normal(size=(n, d)), rng.normal(size=n)
  meta_x, meta_y = rng.normal(size=(m, d)), rng.normal(size=m)
  w, b = rng.normal(size=d), 0.3
  eps, lam = rng.uniform(0.5, 1.5, n), 0.1

  def inner_loss(params, h):
    r = x @ params["w"] + params["b"] - y
    return jnp.sum(h["eps"] * r ** 2) / 2 + h["lam"] * jnp.sum(params["w"] ** 2) / 2

  def outer_loss(params):
    return jnp.sum((meta_x @ params["w"] + params["b"] - meta_y) ** 2) / (2 * m)

  params = to_float64({"w": w, "b": b})
  value, grad = bilevel.hypergradient(inner_loss, outer_loss, params,
                                   to_float64({"eps": eps, "lam": lam}), alpha)

  r = x @ w + b - y
  w_hat, b_hat = w - alpha * (x.T @ (eps * r) + lam * w), b - alpha * np.sum(eps * r)
  meta_r = meta_x @ w_hat + b_hat - meta_y
  g_w, g_b = meta_x.T @ meta_r / m, np.sum(meta_r) / m
  np.testing.assert_allclose(value, np.sum(meta_r ** 2) / (2 * m), rtol=1e-12)
  np.testing.assert_allclose(grad["eps"], -alpha * r * (x @ g_w + g_b), rtol=1e-12)
  np.testing.assert_allclose(grad["lam"], -alpha * w @ g_w, rtol=1e-12)


# --- 3. the L2RW / Jamal identity ------------------------------------------------------------------


@pytest.mark.parametrize("use_bn", [False, True])
def test_eps_gradient_is_minus_lr_times_per_sample_gradient_alignment(x64, use_bn):
  """inner = sum_i eps_i l_i(w): dL_meta/deps_i = -alpha <grad L_meta(w_hat), grad l_i(w)>.

  At eps = 0, w_hat = w exactly (the lookahead gradient is 0), yet the eps-gradient is not.
  Per-sample gradients: vmap of grad over samples without BatchNorm; with BatchNorm l_i depends on
  the whole batch through its statistics, so the vmap runs over the index i of the batch loss.
  """
  model, lr = BatchNormMLP(use_bn=use_bn), 0.5
  variables, batch = make_problem(model, (4,))
  params, losses = variables["params"], per_sample_losses_fn(model, variables, batch)
  outer_loss = meta_loss_fn(model, variables, batch)
  inner_loss = lambda params, eps: jnp.sum(eps * losses(params))
  if use_bn:
    per_sample_grads = jax.vmap(jax.grad(lambda p, i: losses(p)[i]), in_axes=(None, 0))(
        params, jnp.arange(8))
  else:
    single = lambda p, x, y: cross_entropy(model.apply({"params": p}, x[None], train=True),
                                           y[None])[0]
    per_sample_grads = jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(params, batch["x"],
                                                                        batch["y"])

  for eps in (jnp.zeros(8), jnp.linspace(0.5, 1.5, 8)):  # inner is linear in eps: any eps works
    w_hat = bilevel.lookahead(inner_loss, params, eps, lr)
    _, grad_eps = bilevel.hypergradient(inner_loss, outer_loss, params, eps, lr)
    meta_grad = jax.grad(outer_loss)(w_hat)
    expected = -lr * jax.vmap(lambda g: tree_vdot(meta_grad, g))(per_sample_grads)
    assert np.linalg.norm(expected) > 1e-4
    np.testing.assert_allclose(grad_eps, expected, rtol=1e-10, atol=1e-14)
  chex.assert_trees_all_equal(bilevel.lookahead(inner_loss, params, jnp.zeros(8), lr), params)


# --- 4. jit ----------------------------------------------------------------------------------------


def test_jitted_equals_eager_and_traced_lr_does_not_retrace(x64):
  model = BatchNormMLP()
  variables, batch = make_problem(model, (4,))
  losses = per_sample_losses_fn(model, variables, batch)
  outer_loss = meta_loss_fn(model, variables, batch)
  traces = []

  def inner_loss(params, eps):
    traces.append(None)  # Python side effect: runs once per trace, never when compiled code runs
    return jnp.sum(eps * losses(params))

  step = jax.jit(lambda params, eps, lr: bilevel.hypergradient(inner_loss, outer_loss, params, eps,
                                                            lr))
  params, eps = variables["params"], jnp.linspace(0.5, 1.5, 8)
  results = []
  for i, lr in enumerate((0.5, 0.1, 0.01)):
    jitted = step(params, eps, jnp.asarray(lr))
    if i == 0:
      traces_after_first_call = len(traces)
    eager = bilevel.hypergradient(inner_loss, outer_loss, params, eps, lr)
    chex.assert_trees_all_close(jitted, eager, rtol=1e-12, atol=1e-15)
    results.append(jitted[1])
  calls = len(traces) - traces_after_first_call
  assert traces_after_first_call > 0
  step(params, eps, jnp.asarray(0.2))
  assert len(traces) == traces_after_first_call + calls, "a new lr value retraced the step"
  assert not np.allclose(results[0], results[1])  # lr does reach the lookahead


# --- 5. aux ----------------------------------------------------------------------------------------


def test_has_aux_returns_both_losses_aux_and_the_same_gradient(x64):
  """Aux channel: the inner pass's new statistics at w, the meta pass's logits at w_hat."""
  model, lr = BatchNormMLP(), 0.5
  variables, batch = make_problem(model, (4,))
  params, batch_stats = variables["params"], variables["batch_stats"]
  eps = jnp.linspace(0.5, 1.5, 8)

  def inner_loss(params, eps):
    logits, new_stats = train_forward(model, params, batch_stats, batch["x"])
    return jnp.sum(eps * cross_entropy(logits, batch["y"])), {"batch_stats": new_stats}

  def outer_loss(params):
    logits, _ = train_forward(model, params, batch_stats, batch["meta_x"])
    return jnp.mean(cross_entropy(logits, batch["meta_y"])), logits

  (value, (inner_aux, outer_aux)), grad = bilevel.hypergradient(inner_loss, outer_loss, params, eps,
                                                             lr, has_aux=True)
  plain = bilevel.hypergradient(lambda p, e: inner_loss(p, e)[0], lambda p: outer_loss(p)[0], params,
                             eps, lr)
  chex.assert_trees_all_close((value, grad), plain, rtol=1e-14)
  _, expected_stats = train_forward(model, params, batch_stats, batch["x"])
  chex.assert_trees_all_close(inner_aux, {"batch_stats": expected_stats}, rtol=1e-14)
  assert not np.allclose(expected_stats["BatchNorm_0"]["mean"],
                         batch_stats["BatchNorm_0"]["mean"])  # the statistics did move
  w_hat, lookahead_aux = bilevel.lookahead(inner_loss, params, eps, lr, has_aux=True)
  chex.assert_trees_all_close(lookahead_aux, inner_aux, rtol=1e-14)
  meta_logits, _ = train_forward(model, w_hat, batch_stats, batch["meta_x"])
  chex.assert_trees_all_close(outer_aux, meta_logits, rtol=1e-12)
