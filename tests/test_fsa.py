"""FSA: CAMs against Grad-CAM, masks, head/tail split, confusing classes, synthesis, batches, CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fsa_cifar
from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import models
from lt_jax import train
from lt_jax import two_phase
from lt_jax.methods import fsa as fsa_method
from lt_jax.methods import fsa_ops
from lt_jax.methods import heads
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(scope="module")
def tiny_net():
  """ResNet-8 of width 2 on 16x16 one-channel images (4x4 final maps), 4 classes."""
  model = models.get_model(tiny_config(fsa_cifar).model, 4)
  variables = models.init_variables(model, jax.random.key(3), (1, 16, 16, 1))
  images = jax.random.normal(jax.random.key(4), (6, 16, 16, 1))
  return model, variables, images


def test_stage_slicing_composes_to_the_full_network(tiny_net):
  model, variables, images = tiny_net
  logits = model.apply(variables, images, train=False)
  for k in range(4):
    maps = model.apply(variables, images, train=False, to_stage=k)
    np.testing.assert_allclose(model.apply(variables, maps, train=False, from_stage=k), logits,
                               rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="from_stage"):
    model.apply(variables, images, train=False, from_stage=2, to_stage=1)


def grad_cam(model, variables, features, labels):
  """Grad-CAM (Selvaraju et al.) of the logit y w.r.t. the last map, by jax.grad, min-max normalised."""

  def logit(feature_map, y):
    return model.apply(variables, feature_map[None], train=False, from_stage=3)[0, y]

  grads = jax.vmap(jax.grad(logit))(features, labels)
  alpha = grads.mean(axis=(1, 2))  # alpha_k = mean_hw d y_c / d A_k
  cam = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", features, alpha))
  low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
  return (cam - low) / (high - low)


def test_cam_from_weights_equals_grad_cam(tiny_net):
  model, variables, images = tiny_net
  _, features = model.apply(variables, images, train=False, return_features=True)
  labels = jnp.array([0, 1, 2, 3, 1, 2])
  want = np.asarray(grad_cam(model, variables, features, labels))
  got = np.asarray(fsa_ops.class_activation_maps(features, variables["params"]["classifier"]["kernel"],
                                                 labels, relu=True))
  assert features.shape[1:3] == (4, 4)
  varies = np.all(np.isfinite(want), axis=(1, 2))  # Grad-CAM is NaN (0 / 0) on a constant map
  assert varies.sum() >= 4, "most random maps must vary for this check"
  np.testing.assert_allclose(got[varies], want[varies], atol=1e-5)
  np.testing.assert_array_equal(got[~varies], 0.0)  # the guarded version: zeros, not NaN
  np.testing.assert_allclose(got[varies].min(axis=(1, 2)), 0.0, atol=1e-6)
  np.testing.assert_allclose(got[varies].max(axis=(1, 2)), 1.0, atol=1e-6)
  # A different class gives a different map (the CAM really depends on y).
  other = fsa_ops.class_activation_maps(features, variables["params"]["classifier"]["kernel"],
                                        (labels + 1) % 4, relu=True)
  assert not np.allclose(got, other)


def test_paper_cam_is_eq1_min_max_without_relu():
  """Eq. (1) then min-max: negative evidence stays ordered (the ReLU would flatten it to 0)."""
  features = jnp.array([[[[1.0, 0.0]], [[-2.0, 0.0]], [[-1.0, 1.0]]]])  # (1, 3, 1, 2)
  kernel = jnp.array([[1.0], [0.5]])  # M = f_0 + 0.5 f_1 = [1, -2, -0.5]
  cam = np.asarray(fsa_ops.class_activation_maps(features, kernel, jnp.array([0])))[0, :, 0]
  np.testing.assert_allclose(cam, [1.0, 0.0, 0.5])  # (M + 2) / 3
  relu = np.asarray(fsa_ops.class_activation_maps(features, kernel, jnp.array([0]), relu=True))
  np.testing.assert_allclose(relu[0, :, 0], [1.0, 0.0, 0.0])


def test_constant_cam_normalises_to_zero_not_nan():
  features = jnp.zeros((2, 3, 3, 4)).at[1].set(1.0)  # all-zero map; all-equal vectors
  kernel = jnp.ones((4, 5))
  cam = fsa_ops.class_activation_maps(features, kernel, jnp.array([0, 3]))
  np.testing.assert_array_equal(cam, np.zeros((2, 3, 3)))
  specific, generic = fsa_ops.decompose(cam, 0.8, 0.2)
  assert not specific.any() and generic.all()


def test_masks_use_strict_thresholds():
  cam = jnp.array([[[0.0, 0.1, 0.2, 0.5, 0.8, 0.81, 1.0]]])
  specific, generic = fsa_ops.decompose(cam, tau_s=0.8, tau_g=0.2)
  np.testing.assert_array_equal(specific[0, 0], [0, 0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(generic[0, 0], [1, 1, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("field,value", [("fsa.tau_g", 0.8), ("fsa.tau_s", 1.5), ("fsa.head_ratio", 1.0),
                                         ("fsa.confusion", "columns"), ("fsa.mode", "mixup"),
                                         ("fsa.cam", "gradcam"),
                                         ("fsa.eval_every", 7), ("fsa.batch_size", 4), ("fsa.stage", 0)])
def test_bad_fsa_fields_are_named(field, value):
  config = tiny_config(fsa_cifar, **{field: value})
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    config_lib.validate(config)


def test_head_tail_split_cifar10_if100():
  head, tail = fsa_ops.head_tail_split(CIFAR10_IF100, 0.9)
  np.testing.assert_array_equal(head, [0, 1, 2, 3, 4])  # 11515 / 12406 = 92.8% >= 90%
  np.testing.assert_array_equal(tail, [5, 6, 7, 8, 9])
  # The split follows the counts, not the class ids.
  order = np.array([3, 9, 0, 5, 1, 7, 2, 8, 4, 6])
  head, tail = fsa_ops.head_tail_split(np.array(CIFAR10_IF100)[np.argsort(order)], 0.9)
  np.testing.assert_array_equal(head, np.sort(order[:5]))
  np.testing.assert_array_equal(fsa_ops.head_tail_split(CIFAR10_IF100, 0.5)[0], [0, 1])
  with pytest.raises(ValueError, match="fsa.head_ratio"):
    fsa_ops.head_tail_split([10, 10], 0.99)


def test_confusing_classes_paper_and_transposed_readings():
  probs = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.1, 0.2], [0.5, 0.1, 0.4, 0.0],
                    [0.1, 0.5, 0.1, 0.3]])
  scores = fsa_ops.mean_scores(np.repeat(probs, 2, axis=0), np.repeat(np.arange(4), 2), 4)
  np.testing.assert_allclose(scores, probs)
  # paper: row t -> the classes t's samples score highest (not t itself)
  np.testing.assert_array_equal(fsa_ops.confusing_classes(scores, 2, "paper"),
                                [[1, 2], [3, 0], [0, 1], [1, 0]])
  # transposed: column t -> the classes whose samples score t highest
  np.testing.assert_array_equal(fsa_ops.confusing_classes(scores, 2, "transposed"),
                                [[2, 1], [3, 0], [0, 1], [1, 0]])
  with pytest.raises(ValueError, match="fsa.num_confusing"):
    fsa_ops.confusing_classes(scores, 4)


def test_pick_confusing_uses_each_confusing_class_once():
  rows = jnp.array([[5, 6, 7], [1, 2, 3]])
  picks = np.asarray(fsa_ops.pick_confusing(jax.random.key(0), rows, 3))
  for row, pick in zip(np.asarray(rows), picks):
    assert sorted(pick) == sorted(row)
  picks = np.asarray(fsa_ops.pick_confusing(jax.random.key(1), rows, 2))
  assert all(len(set(p)) == 2 and set(p) <= set(r) for p, r in zip(picks, np.asarray(rows)))


def tagged_maps(num_tail, num_aug, size, channels=3):
  """Maps whose every vector names its source: tail i at p -> [1000 + 100 i + p, 0, 0];
  confusing (i, a) at p -> [0, 1000 + 100 (i N_a + a) + p, 0]."""
  positions = np.arange(size * size).reshape(size, size)
  tail = np.zeros((num_tail, size, size, channels), np.float32)
  tail[..., 0] = 1000 + 100 * np.arange(num_tail)[:, None, None] + positions
  conf = np.zeros((num_tail, num_aug, size, size, channels), np.float32)
  pair = np.arange(num_tail * num_aug).reshape(num_tail, num_aug)
  conf[..., 1] = 1000 + 100 * pair[:, :, None, None] + positions
  return tail, conf


def test_every_synthesised_feature_carries_its_tail_samples_label():
  num_tail, num_aug, size = 3, 4, 4
  tail, conf = tagged_maps(num_tail, num_aug, size)
  rng = np.random.default_rng(0)
  tail_cams = rng.uniform(size=(num_tail, size, size)).astype(np.float32)
  conf_cams = rng.uniform(size=(num_tail, num_aug, size, size)).astype(np.float32)
  tail_cams[:, 0, 0], conf_cams[:, :, 0, 0] = 0.95, 0.05  # both parts non-empty
  tail[0, 0, 0] = 0.0  # an all-zero class-specific vector: never drawn
  tail_cams[0, 0, 1] = 0.99
  tail_labels = np.array([7, 8, 9], np.int32)
  head = np.full((num_tail * (1 + num_aug), size, size, 3), -1.0, np.float32)
  head_labels = np.arange(num_tail * (1 + num_aug), dtype=np.int32) % 3
  compose = jax.jit(fsa_ops.compose, static_argnames=("tau_s", "tau_g"))
  maps, labels, gamma = compose(
      jax.random.key(0), tail, tail_labels, tail_cams, conf, conf_cams, head, head_labels,
      tau_s=0.8, tau_g=0.2)
  maps, labels, gamma = np.asarray(maps), np.asarray(labels), np.asarray(gamma)
  assert maps.shape == (2 * num_tail * (1 + num_aug), size, size, 3)
  np.testing.assert_array_equal(maps[:num_tail], tail)
  np.testing.assert_array_equal(labels[:num_tail], tail_labels)
  np.testing.assert_array_equal(maps[num_tail * (1 + num_aug):], head)
  np.testing.assert_array_equal(labels[num_tail * (1 + num_aug):], head_labels)
  assert np.all((gamma > 0) & (gamma < 1))
  synth = maps[num_tail:num_tail * (1 + num_aug)].reshape(-1, size * size, 3)
  for n, vectors in enumerate(synth):
    from_tail = vectors[:, 0] > 0
    assert np.all(from_tail ^ (vectors[:, 1] > 0)), "each vector comes from exactly one source"
    tail_code = (vectors[from_tail, 0] - 1000).astype(int)
    conf_code = (vectors[~from_tail, 1] - 1000).astype(int)
    source_tail = tail_code // 100  # decoded from the features, independently of compose's order
    assert np.all(source_tail == source_tail[0]) if len(source_tail) else True
    i, a = divmod(n, num_aug)
    assert np.all(conf_code // 100 == i * num_aug + a)
    if len(source_tail):
      assert labels[num_tail + n] == tail_labels[source_tail[0]]
    assert labels[num_tail + n] == tail_labels[i]
    specific = (tail_cams[i] > 0.8).reshape(-1) & np.any(tail[i].reshape(-1, 3) != 0, -1)
    generic = (conf_cams[i, a] < 0.2).reshape(-1)
    assert np.all(specific[(tail_code % 100).astype(int)])
    assert np.all(generic[(conf_code % 100).astype(int)])
    assert from_tail.sum() == round(float(gamma[i, a]) * size * size)


@pytest.fixture(scope="module")
def phase1(tmp_path_factory):
  """(FrozenNet, training images) of an untrained digits setup standing in for a phase-I run (the
  batch needs no training)."""
  config = tiny_config(fsa_cifar)
  config.method = "erm"
  run = train.setup(config, str(tmp_path_factory.mktemp("phase1")))
  return two_phase.frozen_net(run, "phase1"), run.data.train.images


@pytest.mark.parametrize("mode,stage,cam", [("fsa", 2, "paper"), ("fsa", -1, "online"),
                                            ("balanced", -1, "paper")])
def test_batch_composition_and_determinism(phase1, mode, stage, cam):
  """FSA batches (augmenting after stage 2 or the last), the control; which classifier the CAMs use."""
  phase1, phase1_images = phase1
  config = tiny_config(fsa_cifar, **{"fsa.mode": mode, "fsa.batch_size": 33, "fsa.num_augment": 3,
                                     "fsa.stage": stage, "fsa.cam": cam,
                                     "fsa.image_augment": cam == "online"})
  head_fn = fsa_method.make_head(config, phase1)
  the_plan = head_fn.files[fsa_method.PLAN_FILE]
  counts = phase1.class_counts
  head, tail = fsa_ops.head_tail_split(counts, 0.9)
  assert the_plan["head"] == head.tolist() and the_plan["tail"] == tail.tolist()
  num_tail = 33 // 8
  assert (the_plan["num_tail"], the_plan["batch"]) == (num_tail, 2 * num_tail * 4)
  images = jax.device_put(phase1_images)

  @jax.jit
  def batch(key, classifier):  # the in-memory feed's composition of sample, images, features
    ids = head_fn.sample(key)
    x = heads.augmented_images(jax.random.fold_in(key, 1), images, ids, phase1, head_fn.augment)
    return head_fn.features(jax.random.fold_in(key, 2), classifier, x, ids)

  pooled, labels, extra = batch(heads.phase2_key(0, 1), head_fn.init)
  pooled, labels = np.asarray(pooled), np.asarray(labels)
  side = num_tail * 4
  assert pooled.shape == (2 * side, phase1.params["classifier"]["kernel"].shape[0])
  assert np.isin(labels[:side], tail).all() and np.isin(labels[side:], head).all()
  if mode == "fsa":
    np.testing.assert_array_equal(labels[num_tail:side], np.repeat(labels[:num_tail], 3))
    assert 0 < float(extra["gamma"]) < 1
  again, again_labels, _ = batch(heads.phase2_key(0, 1), head_fn.init)
  np.testing.assert_array_equal(np.asarray(again), pooled)
  np.testing.assert_array_equal(np.asarray(again_labels), labels)
  other, _, _ = batch(heads.phase2_key(0, 2), head_fn.init)
  assert not np.allclose(np.asarray(other), pooled)
  if mode == "fsa":  # 'paper' CAMs use phase I's classifier, 'online' the one being fine-tuned
    tuned = jax.tree.map(lambda w: w + jax.random.normal(jax.random.key(9), w.shape), head_fn.init)
    moved, _, _ = batch(heads.phase2_key(0, 1), tuned)
    assert np.allclose(np.asarray(moved), pooled) == (cam == "paper")


def test_cli_smoke_run(tmp_path):
  workdir = tmp_path / "fsa"
  args = [sys.executable, "-m", "lt_jax.main", "--config=configs/fsa_cifar.py:smoke",
          f"--workdir={workdir}", "--config.train.plots=False", "--config.train.epochs=1",
          "--config.fsa.steps=20", "--config.fsa.eval_every=10"]
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LT_JAX_"))}
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "FSA head classes" in result.stdout and "FSA tail classes" in result.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  phase1_summary = json.loads((workdir / "phase1" / "summary.json").read_text())
  assert summary["final_epoch"] == 2 and 0 <= summary["final_top1_error"] <= 100
  assert summary["phase1_final_top1_error"] == phase1_summary["final_top1_error"]
  the_plan = json.loads((workdir / fsa_method.PLAN_FILE).read_text())
  assert the_plan["tail"] == [7, 8, 9]  # digits IF 10: 7 classes hold 90.5%
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in records if r["kind"] == "train"] == [10, 20]
  # The checkpoint keeps phase I's backbone and changes only the classifier.
  phase1_mngr = checkpointing.manager(str(workdir / "phase1"), 2)
  p1 = phase1_mngr.restore(phase1_mngr.latest_step())["params"]
  mngr = checkpointing.manager(str(workdir), 2)
  assert mngr.latest_step() == 2
  saved = mngr.restore(2)["params"]
  for name in p1:
    same = jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                     p1[name], saved[name]))
    assert same == (name != "classifier"), name
