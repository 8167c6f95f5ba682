"""Feature Space Augmentation (Chu et al., ECCV 2020) as a two-phase method.

Phase I is any one-phase run (``fsa.phase1_method``, CE by default), loaded from
``fsa.phase1_workdir`` or trained first in ``WORKDIR/phase1``. Phase II freezes it (eval-mode
BatchNorm) and fine-tunes only the classifier for ``fsa.steps`` iterations at a fixed lr on
batches of 2 N_t (1 + N_a) feature maps:

* N_t tail samples (uniform over the tail classes' samples) and their own maps;
* for each, N_a samples of its confusing classes, and N_a maps synthesised from the tail sample's
  class-specific part (CAM > tau_s) and the confusing sample's class-generic part (CAM < tau_g),
  labelled with the tail sample's label (``lt_jax.fsa``);
* N_t (1 + N_a) head samples' maps, unmodified.

CAMs use the current (fine-tuned) classifier weights and the ground-truth class of each sample.
With ``fsa.stage = k`` the maps are taken after stage k, CAMs (from the last stage) are resized to
that resolution, and the synthesised maps run through the rest of the frozen network.
``fsa.mode = 'balanced'`` is the paper's control: the same half-tail, half-head batches of real
features, without synthesis.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from lt_jax import config as config_lib
from lt_jax import finetune
from lt_jax import fsa as fsa_lib
from lt_jax import train

SEED_SALT = 5  # phase-II randomness: fold_in(key(config.seed), SEED_SALT)
PLAN_FILE = "fsa_plan.json"


def plan(config, phase1: finetune.Phase1) -> dict:
  """Head / tail split, confusing classes and batch sizes from the phase-I run (numpy).

  The mean classification scores S come from the phase-I network on the un-augmented training set.
  """
  cfg, run = config.fsa, phase1.run
  model_name = phase1.config.model.name
  if not model_name.startswith("resnet"):
    raise ValueError(f"method 'fsa' needs a ResNet phase-I model (model.name={model_name!r} in "
                     f"{phase1.workdir}): CAMs need a spatial map before global average pooling")
  num_stages = len(run.ctx.model.stage_sizes)
  if cfg.stage > num_stages:
    raise ValueError(f"fsa.stage={cfg.stage} but {model_name} has stages 1-{num_stages} (-1 = the last)")
  counts = np.asarray(run.ctx.class_counts)
  head, tail = fsa_lib.head_tail_split(counts, cfg.head_ratio)
  predict_fn = jax.jit(lambda p, b, x: jax.nn.softmax(train.predict(
      p, b, x, model=run.ctx.model, mean=run.mean, std=run.std,
      batch_size=min(config.train.eval_batch_size, len(run.data.train.labels)))))
  probs = np.asarray(predict_fn(run.state.params, run.state.batch_stats, run.data.train.images))
  scores = fsa_lib.mean_scores(probs, run.data.train.labels, len(counts))
  confusing = fsa_lib.confusing_classes(scores, cfg.num_confusing, cfg.confusion)
  num_tail, batch = fsa_lib.batch_sizes(cfg.batch_size, cfg.num_augment)
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


def make_head(config, phase1: finetune.Phase1, the_plan: dict) -> finetune.Head:
  """The classifier head and FSA's batch function, closed over device arrays."""
  cfg, run = config.fsa, phase1.run
  model, params, batch_stats = run.ctx.model, run.state.params, run.state.batch_stats
  num_classes = len(run.ctx.class_counts)
  stage = None if cfg.stage == -1 else cfg.stage
  num_tail, num_aug = the_plan["num_tail"], cfg.num_augment
  num_side = num_tail * (1 + num_aug)
  labels = jnp.asarray(run.data.train.labels)
  images = jax.device_put(run.data.train.images)
  members, counts = (jnp.asarray(a) for a in finetune.class_members(run.data.train.labels, num_classes))
  in_head = np.isin(run.data.train.labels, the_plan["head"])
  head_pool, tail_pool = jnp.asarray(np.flatnonzero(in_head)), jnp.asarray(np.flatnonzero(~in_head))
  confusing = jnp.asarray(the_plan["confusing"], jnp.int32)

  def pooled(maps):
    if stage is not None:
      maps = finetune.frozen_maps_from(model, params, batch_stats, maps, stage)
    return maps.mean(axis=(1, 2))

  def batch(key, classifier):
    tail_key, pick_key, confusing_key, head_key, image_key, synth_key = jax.random.split(key, 6)
    if cfg.mode == "fsa":
      tail_ids = finetune.ids_from_pool(tail_key, tail_pool, num_tail)
      classes = fsa_lib.pick_confusing(pick_key, confusing[labels[tail_ids]], num_aug)
      confusing_ids = finetune.ids_in_classes(confusing_key, classes, members, counts).reshape(-1)
    else:  # balanced control: N_t (1 + N_a) real tail samples
      tail_ids = finetune.ids_from_pool(tail_key, tail_pool, num_side)
      confusing_ids = jnp.zeros((0,), jnp.int32)
    head_ids = finetune.ids_from_pool(head_key, head_pool, num_side)
    ids = jnp.concatenate([tail_ids, confusing_ids, head_ids])
    x = finetune.augmented_images(image_key, images, ids, phase1, cfg.image_augment)
    maps, y = finetune.frozen_maps(model, params, batch_stats, x, stage), labels[ids]
    if cfg.mode != "fsa":
      return pooled(maps), y, {}
    num_cam = num_side  # the tail samples and their confusing samples
    last = maps[:num_cam] if stage is None else finetune.frozen_maps_from(
        model, params, batch_stats, maps[:num_cam], stage)
    cams = fsa_lib.class_activation_maps(last, classifier["kernel"], y[:num_cam], relu=cfg.cam_relu)
    if stage is not None:
      cams = jax.image.resize(cams, (num_cam, *maps.shape[1:3]), "bilinear")
    fused_maps, fused_labels, gamma = fsa_lib.compose(
        synth_key, maps[:num_tail], y[:num_tail], cams[:num_tail],
        maps[num_tail:num_cam].reshape(num_tail, num_aug, *maps.shape[1:]),
        cams[num_tail:num_cam].reshape(num_tail, num_aug, *cams.shape[1:]),
        maps[num_cam:], y[num_cam:], tau_s=cfg.tau_s, tau_g=cfg.tau_g)
    specific, generic = fsa_lib.decompose(cams, cfg.tau_s, cfg.tau_g)
    extra = {"gamma": gamma.mean(), "specific_fraction": specific[:num_tail].mean(),
             "generic_fraction": generic[num_tail:].mean()}
    return pooled(fused_maps), fused_labels, extra

  def logits(classifier, features):
    return finetune.classifier_logits(phase1.config, num_classes, classifier, features)

  def fold(classifier, base_params):
    return {**base_params, "classifier": classifier}

  return finetune.Head(init=params["classifier"], batch=batch, logits=logits, fold=fold)


def run(config, workdir: str) -> dict:
  """Phase I (loaded or trained), then FSA's phase II; returns the summary (``summary.json``)."""
  config_lib.validate(config)
  phase1 = finetune.load_phase1(config, workdir, "fsa")
  the_plan = plan(config, phase1)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    print(describe(the_plan, phase1.run.data.class_names))
    with open(os.path.join(workdir, PLAN_FILE), "w") as f:
      json.dump(the_plan, f, indent=1)
  head = make_head(config, phase1, the_plan)
  return finetune.fit_head(config, workdir, phase1, head, config.fsa, seed_salt=SEED_SALT)
