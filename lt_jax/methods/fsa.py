"""Feature Space Augmentation (Chu et al., ECCV 2020) as a two-phase method.

Phase I is any one-phase run (``fsa.phase1_method``, CE by default), loaded from
``fsa.phase1_workdir`` or trained first in ``WORKDIR/phase1``. Phase II freezes it (eval-mode
BatchNorm) and fine-tunes only the classifier for ``fsa.steps`` iterations at a fixed lr on
batches of 2 N_t (1 + N_a) feature maps:

* N_t tail samples (uniform over the tail classes' samples) and their own maps;
* for each, N_a samples of its confusing classes, and N_a maps synthesised from the tail sample's
  class-specific part (CAM > tau_s) and the confusing sample's class-generic part (CAM < tau_g),
  labelled with the tail sample's label (``fsa_ops``);
* N_t (1 + N_a) head samples' maps, unmodified.

CAMs (``fsa.cam``) use the ground-truth class of each sample and, with ``paper`` (default), the
phase-I classifier's weights and Eq. (1) as written (no ReLU): Alg. 1 line 1 takes "All training
images features F and their CAM M" as its input, and Sec. 4.2 "the weights of the linear classifier
trained in Phase-I". The backbone is frozen (eval mode), so the maps of the un-augmented images
computed in each batch are those precomputed features (``fsa.image_augment=False``, the default,
draws them; nothing of size N x h x w x K is stored). ``online`` is the public reimplementation's
form: the current (fine-tuned) classifier's weights on the batch's maps (freshly augmented with
``fsa.image_augment=True``), ReLU'd as Grad-CAM.
With ``fsa.stage = k`` the maps are taken after stage k, CAMs (from the last stage) are resized to
that resolution, and the synthesised maps run through the rest of the frozen network.
``fsa.mode = 'balanced'`` is the paper's control: the same half-tail, half-head batches of real
features, without synthesis.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lt_jax.data import samplers
from lt_jax.methods import fsa_ops
from lt_jax.methods import heads

SEED_SALT = 5  # phase-II randomness: fold_in(key(config.seed), SEED_SALT)
PLAN_FILE = "fsa_plan.json"
CHOICES = {"mode": ("fsa", "balanced"), "confusion": ("paper", "transposed"),
           "cam": ("paper", "online")}


def validate_config(config) -> None:
  """FSA's fields: thresholds 0 <= tau_g < tau_s <= 1, h_r in (0, 1), N_a, N_f >= 1, the batch."""
  cfg = config.fsa
  for name, allowed in CHOICES.items():
    if cfg[name] not in allowed:
      raise ValueError(f"fsa.{name}={cfg[name]!r} is not allowed; expected one of {list(allowed)}")
  if not 0 <= cfg.tau_g < cfg.tau_s <= 1:
    raise ValueError(f"fsa.tau_g={cfg.tau_g} and fsa.tau_s={cfg.tau_s}: need 0 <= tau_g < tau_s <= 1")
  if not 0 < cfg.head_ratio < 1:
    raise ValueError(f"fsa.head_ratio={cfg.head_ratio} (h_r) must be in (0, 1)")
  for name in ("num_augment", "num_confusing"):
    if not isinstance(cfg[name], int) or cfg[name] < 1:
      raise ValueError(f"fsa.{name}={cfg[name]!r} must be a positive integer")
  if cfg.batch_size < 2 * (1 + cfg.num_augment):
    raise ValueError(f"fsa.batch_size={cfg.batch_size} must be at least 2 (1 + fsa.num_augment) = "
                     f"{2 * (1 + cfg.num_augment)} (one tail sample with its N_a syntheses and as "
                     "many head samples)")
  if not isinstance(cfg.stage, int) or cfg.stage < -1 or cfg.stage == 0:
    raise ValueError(f"fsa.stage={cfg.stage!r} must be -1 (after the last stage) or a stage 1, 2, ...")
  check_model(config.model.name, "model.name")


def check_model(model_name: str, where: str) -> None:
  if not model_name.startswith("resnet"):
    raise ValueError(f"method 'fsa' needs a ResNet ({where}={model_name!r}): CAMs need a spatial "
                     "feature map before global average pooling")


def plan(config, net: heads.FrozenNet) -> dict:
  """Head / tail split, confusing classes and batch sizes from the phase-I network (numpy).

  The mean classification scores S come from the phase-I network on the un-augmented training set
  (``net.train_logits``: in memory, or one streamed evaluation pass over the training list).
  """
  cfg = config.fsa
  check_model(net.config.model.name, f"model.name in {net.workdir}")
  num_stages = len(net.model.stage_sizes)
  if cfg.stage > num_stages:
    raise ValueError(f"fsa.stage={cfg.stage} but {net.config.model.name} has stages 1-{num_stages} "
                     "(-1 = the last)")
  counts = np.asarray(net.class_counts)
  head, tail = fsa_ops.head_tail_split(counts, cfg.head_ratio)
  logits, labels = net.train_logits()
  scores = fsa_ops.mean_scores(jax.nn.softmax(logits), labels, len(counts))
  confusing = fsa_ops.confusing_classes(scores, cfg.num_confusing, cfg.confusion)
  num_tail, batch = fsa_ops.batch_sizes(cfg.batch_size, cfg.num_augment)
  return {"head": head.tolist(), "tail": tail.tolist(), "confusing": confusing.tolist(),
          "head_share": float(counts[head].sum() / counts.sum()), "num_tail": num_tail,
          "batch": batch, "head_ratio": cfg.head_ratio, "scores": scores.tolist()}


def describe(the_plan: dict, class_names) -> str:
  """The printed split: head and tail classes with their share, each tail class's confusing ones."""
  name = lambda c: f"{c}:{class_names[c]}"
  lines = [f"FSA head classes (h_r={the_plan['head_ratio']}, {100 * the_plan['head_share']:.1f}% of the "
           f"samples): {[name(c) for c in the_plan['head']]}",
           f"FSA tail classes: {[name(c) for c in the_plan['tail']]}"]
  for t in the_plan["tail"]:
    lines.append(f"  confusing classes of {name(t)}: {[name(c) for c in the_plan['confusing'][t]]}")
  lines.append(f"batch: N_t={the_plan['num_tail']} tail samples, {the_plan['batch']} feature maps")
  return "\n".join(lines)


def make_head(config, net: heads.FrozenNet) -> heads.Head:
  """The classifier head with FSA's sampling (tail, confusing, head ids) and its feature synthesis."""
  cfg = config.fsa
  the_plan = plan(config, net)
  stage = None if cfg.stage == -1 else cfg.stage
  num_tail, num_aug = the_plan["num_tail"], cfg.num_augment
  num_side = num_tail * (1 + num_aug)
  labels = jnp.asarray(net.train_labels)
  index = samplers.class_index(net.train_labels, net.num_classes)
  in_head = np.isin(net.train_labels, the_plan["head"])
  head_pool, tail_pool = jnp.asarray(np.flatnonzero(in_head)), jnp.asarray(np.flatnonzero(~in_head))
  confusing = jnp.asarray(the_plan["confusing"], jnp.int32)
  phase1_kernel = jnp.asarray(net.params["classifier"]["kernel"])  # fsa.cam='paper': W of phase I

  def pooled(maps):
    if stage is not None:
      maps = heads.frozen_maps_from(net, maps, stage)
    return maps.mean(axis=(1, 2))

  def sample(key):
    """ids of N_t tail samples, their N_t N_a confusing samples, N_t (1 + N_a) head samples."""
    tail_key, pick_key, confusing_key, head_key = jax.random.split(key, 4)
    if cfg.mode == "fsa":
      tail_ids = samplers.ids_from_pool(tail_key, tail_pool, num_tail)
      classes = fsa_ops.pick_confusing(pick_key, confusing[labels[tail_ids]], num_aug)
      confusing_ids = samplers.ids_in_classes(confusing_key, index, classes).reshape(-1)
    else:  # balanced control: N_t (1 + N_a) real tail samples
      tail_ids = samplers.ids_from_pool(tail_key, tail_pool, num_side)
      confusing_ids = jnp.zeros((0,), jnp.int32)
    head_ids = samplers.ids_from_pool(head_key, head_pool, num_side)
    return jnp.concatenate([tail_ids, confusing_ids, head_ids]).astype(jnp.int32)

  def features(synth_key, classifier, x, ids):
    maps, y = heads.frozen_maps(net, x, stage), labels[ids]
    if cfg.mode != "fsa":
      return pooled(maps), y, {}
    num_cam = num_side  # the tail samples and their confusing samples
    last = maps[:num_cam] if stage is None else heads.frozen_maps_from(net, maps[:num_cam], stage)
    kernel = phase1_kernel if cfg.cam == "paper" else classifier["kernel"]
    cams = fsa_ops.class_activation_maps(last, kernel, y[:num_cam], relu=cfg.cam == "online")
    if stage is not None:
      cams = jax.image.resize(cams, (num_cam, *maps.shape[1:3]), "bilinear")
    fused_maps, fused_labels, gamma = fsa_ops.compose(
        synth_key, maps[:num_tail], y[:num_tail], cams[:num_tail],
        maps[num_tail:num_cam].reshape(num_tail, num_aug, *maps.shape[1:]),
        cams[num_tail:num_cam].reshape(num_tail, num_aug, *cams.shape[1:]),
        maps[num_cam:], y[num_cam:], tau_s=cfg.tau_s, tau_g=cfg.tau_g)
    specific, generic = fsa_ops.decompose(cams, cfg.tau_s, cfg.tau_g)
    extra = {"gamma": gamma.mean(), "specific_fraction": specific[:num_tail].mean(),
             "generic_fraction": generic[num_tail:].mean()}
    return pooled(fused_maps), fused_labels, extra

  return heads.Head(init=net.params["classifier"], sample=sample, features=features,
                    logits=lambda classifier, x: heads.classifier_logits(net, classifier, x),
                    fold=heads.with_classifier, train_steps=cfg.steps, seed_salt=SEED_SALT,
                    augment=cfg.image_augment, description=describe(the_plan, net.class_names),
                    files={PLAN_FILE: the_plan})
