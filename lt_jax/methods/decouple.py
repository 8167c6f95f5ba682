"""Decoupled classifiers (Kang et al., ICLR 2020) on a frozen phase-I representation.

``config.method`` picks one; all start from the phase-I run of ``decouple.phase1_workdir`` (or
train ``decouple.phase1_method`` first in ``WORKDIR/phase1``) and keep its backbone and BatchNorm
statistics frozen:

* ``crt``: classifier re-training. The classifier (W, b) is re-initialised (``decouple.reinit``)
  and trained with class-balanced sampling on the frozen features.
* ``tau_norm``: no training; W_c <- W_c / ||W_c||^tau for each class's weight vector (column c of
  the kernel), bias kept. tau = 0 is the phase-I classifier, tau = 1 equal-norm weights.
* ``posthoc_la``: post-hoc logit adjustment (Menon et al., ICLR 2021), no training: logits
  z - tau log pi (pi the training class prior, tau = ``decouple.la_tau``), folded into the bias
  b <- b - tau log pi.
* ``lws``: learnable weight scaling. Logits f_c (W_c . x + b_c) with per-class scales f_c (init 1)
  learned with class-balanced sampling, W and b frozen; the checkpoint holds f_c W_c, f_c b_c.

Training (crt, lws) is ``finetune.fit_head``: SGD with momentum at ``decouple.lr`` (cosine by
default) for ``decouple.steps`` iterations of ``decouple.batch_size``.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np

from lt_jax import config as config_lib
from lt_jax import finetune
from lt_jax import losses

SEED_SALT = 9  # phase-II randomness: fold_in(key(config.seed), SEED_SALT)


def tau_normalise(kernel: jax.Array, tau: float) -> jax.Array:
  """W_c / ||W_c||^tau for every class c (kernel (D, C): W_c is column c)."""
  return kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True) ** tau


def features_batch(config, phase1: finetune.Phase1):
  """(key, head) -> (pooled frozen features, labels, {}) of a class-balanced or instance batch."""
  cfg, run = config.decouple, phase1.run
  model, params, batch_stats = run.ctx.model, run.state.params, run.state.batch_stats
  num_classes = len(run.ctx.class_counts)
  labels = jnp.asarray(run.data.train.labels)
  images = jax.device_put(run.data.train.images)
  members, counts = finetune.class_members(run.data.train.labels, num_classes)
  present = jnp.asarray(np.flatnonzero(counts > 0), jnp.int32)
  members, counts = jnp.asarray(members), jnp.asarray(counts)
  every_id = jnp.arange(len(run.data.train.labels), dtype=jnp.int32)

  def batch(key, head):
    del head
    id_key, image_key = jax.random.split(key)
    if cfg.sampler == "class_balanced":
      ids = finetune.class_balanced_ids(id_key, present, members, counts, cfg.batch_size)
    else:
      ids = finetune.ids_from_pool(id_key, every_id, cfg.batch_size)
    x = finetune.augmented_images(image_key, images, ids, phase1, cfg.image_augment)
    return finetune.frozen_maps(model, params, batch_stats, x).mean(axis=(1, 2)), labels[ids], {}

  return batch


def with_classifier(classifier, base_params):
  return {**base_params, "classifier": classifier}


def crt_head(config, phase1: finetune.Phase1) -> finetune.Head:
  """cRT: a (re-initialised) classifier trained on class-balanced batches of frozen features."""
  run, num_classes = phase1.run, len(phase1.run.ctx.class_counts)
  classifier = run.state.params["classifier"]
  if config.decouple.reinit:
    feature_dim = classifier["kernel"].shape[0]
    key = jax.random.fold_in(jax.random.key(config.seed), SEED_SALT + 1)
    classifier = finetune.classifier_module(phase1.config, num_classes).init(
        key, jnp.zeros((1, feature_dim)))["params"]
  logits = lambda c, x: finetune.classifier_logits(phase1.config, num_classes, c, x)
  return finetune.Head(init=classifier, batch=features_batch(config, phase1), logits=logits,
                       fold=with_classifier)


def tau_norm_head(config, phase1: finetune.Phase1) -> finetune.Head:
  """tau-normalised phase-I classifier (nothing to train)."""
  classifier = dict(phase1.run.state.params["classifier"])
  classifier["kernel"] = tau_normalise(classifier["kernel"], config.decouple.tau)
  return finetune.Head(init=classifier, batch=None, logits=None, fold=with_classifier)


def posthoc_la_head(config, phase1: finetune.Phase1) -> finetune.Head:
  """Post-hoc logit adjustment: the phase-I classifier with bias b - tau log pi (nothing to train)."""
  classifier = dict(phase1.run.state.params["classifier"])
  classifier["bias"] = losses.posthoc_logit_adjustment(classifier["bias"][None], phase1.run.ctx.class_counts,
                                                       config.decouple.la_tau)[0]
  return finetune.Head(init=classifier, batch=None, logits=None, fold=with_classifier)


def lws_head(config, phase1: finetune.Phase1) -> finetune.Head:
  """LWS: per-class scales f_c on the frozen phase-I classifier's logits."""
  run, num_classes = phase1.run, len(phase1.run.ctx.class_counts)
  classifier = run.state.params["classifier"]

  def logits(head, x):
    return head["scales"] * finetune.classifier_logits(phase1.config, num_classes, classifier, x)

  def fold(head, base_params):
    scaled = {"kernel": classifier["kernel"] * head["scales"], "bias": classifier["bias"] * head["scales"]}
    return with_classifier(scaled, base_params)

  return finetune.Head(init={"scales": jnp.ones((num_classes,), jnp.float32)},
                       batch=features_batch(config, phase1), logits=logits, fold=fold)


HEADS = {"crt": crt_head, "tau_norm": tau_norm_head, "lws": lws_head, "posthoc_la": posthoc_la_head}
POST_HOC = ("tau_norm", "posthoc_la")  # adjust the phase-I classifier, no training


def run(config, workdir: str) -> dict:
  """Phase I (loaded or trained), then the decoupled classifier of ``config.method``."""
  config_lib.validate(config)
  phase1 = finetune.load_phase1(config, workdir, "decouple")
  if config.method in ("tau_norm", "lws", "posthoc_la") and phase1.config.model.classifier != "linear":
    raise ValueError(f"method {config.method!r} needs a linear classifier (model.classifier="
                     f"{phase1.config.model.classifier!r} in {phase1.workdir}): a cosine classifier "
                     "normalises its weights itself")
  cfg = config.decouple
  if config.method in POST_HOC:
    cfg = copy.deepcopy(cfg)
    cfg.steps = 0
    print(f"tau_norm: W_c / ||W_c||^{cfg.tau}" if config.method == "tau_norm"
          else f"posthoc_la: z - {cfg.la_tau} log pi")
  head = HEADS[config.method](config, phase1)
  return finetune.fit_head(config, workdir, phase1, head, cfg, seed_salt=SEED_SALT)
