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

Training (crt, lws) is ``lt_jax.two_phase``: SGD with momentum at ``decouple.lr`` (cosine by
default) for ``decouple.steps`` iterations of ``decouple.batch_size``.
"""

import jax
import jax.numpy as jnp

from lt_jax import losses
from lt_jax.data import samplers
from lt_jax.methods import heads

SEED_SALT = 9  # phase-II randomness: fold_in(key(config.seed), SEED_SALT)
SAMPLERS = ("class_balanced", "instance")


def validate_config(config) -> None:
  """The ``decouple.*`` fields beyond those every phase-II group has."""
  cfg = config.decouple
  for name in ("tau", "la_tau"):
    if not cfg[name] >= 0:
      raise ValueError(f"decouple.{name}={cfg[name]!r} must be >= 0")
  if cfg.sampler not in SAMPLERS:
    raise ValueError(f"decouple.sampler={cfg.sampler!r} is not allowed; expected one of {list(SAMPLERS)}")


def tau_normalise(kernel: jax.Array, tau: float) -> jax.Array:
  """W_c / ||W_c||^tau for every class c (kernel (D, C): W_c is column c)."""
  return kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True) ** tau


def balanced_sampling(config, net: heads.FrozenNet):
  """(sample, features) of crt / lws: class-balanced (or instance) ids, their pooled frozen
  features."""
  cfg = config.decouple
  labels = jnp.asarray(net.train_labels)
  index = samplers.class_index(net.train_labels, net.num_classes)
  probs = samplers.class_probabilities(net.class_counts, cfg.sampler)

  def sample(key):
    return samplers.sample_ids(key, index, probs, cfg.batch_size).astype(jnp.int32)

  def features(key, head, x, ids):
    del key, head
    return heads.frozen_maps(net, x).mean(axis=(1, 2)), labels[ids], {}

  return {"sample": sample, "features": features, "augment": cfg.image_augment}


def check_linear(config, net: heads.FrozenNet) -> None:
  if net.config.model.classifier != "linear":
    raise ValueError(f"method {config.method!r} needs a linear classifier (model.classifier="
                     f"{net.config.model.classifier!r} in {net.workdir}): a cosine classifier "
                     "normalises its weights itself")


def crt_head(config, net: heads.FrozenNet) -> heads.Head:
  """cRT: a (re-initialised) classifier trained on class-balanced batches of frozen features."""
  classifier = net.params["classifier"]
  if config.decouple.reinit:
    key = jax.random.fold_in(jax.random.key(config.seed), SEED_SALT + 1)
    classifier = heads.classifier_module(net).init(
        key, jnp.zeros((1, classifier["kernel"].shape[0])))["params"]
  return heads.Head(init=classifier, **balanced_sampling(config, net),
                    logits=lambda c, x: heads.classifier_logits(net, c, x), fold=heads.with_classifier,
                    train_steps=config.decouple.steps, seed_salt=SEED_SALT)


def post_hoc(classifier, description: str) -> heads.Head:
  """A head that adjusts the phase-I classifier and trains nothing."""
  return heads.Head(init=classifier, sample=None, features=None, logits=None, fold=heads.with_classifier,
                    train_steps=0, seed_salt=SEED_SALT, description=description)


def tau_norm_head(config, net: heads.FrozenNet) -> heads.Head:
  """tau-normalised phase-I classifier (nothing to train)."""
  check_linear(config, net)
  tau = config.decouple.tau
  classifier = dict(net.params["classifier"])
  classifier["kernel"] = tau_normalise(classifier["kernel"], tau)
  return post_hoc(classifier, f"tau_norm: W_c / ||W_c||^{tau}")


def posthoc_la_head(config, net: heads.FrozenNet) -> heads.Head:
  """Post-hoc logit adjustment: the phase-I classifier with bias b - tau log pi (nothing to train)."""
  check_linear(config, net)
  tau = config.decouple.la_tau
  classifier = dict(net.params["classifier"])
  classifier["bias"] = losses.posthoc_logit_adjustment(classifier["bias"][None], net.class_counts, tau)[0]
  return post_hoc(classifier, f"posthoc_la: z - {tau} log pi")


def lws_head(config, net: heads.FrozenNet) -> heads.Head:
  """LWS: per-class scales f_c on the frozen phase-I classifier's logits."""
  check_linear(config, net)
  classifier = net.params["classifier"]

  def logits(head, x):
    return head["scales"] * heads.classifier_logits(net, classifier, x)

  def fold(head, base_params):
    scaled = {"kernel": classifier["kernel"] * head["scales"], "bias": classifier["bias"] * head["scales"]}
    return heads.with_classifier(scaled, base_params)

  return heads.Head(init={"scales": jnp.ones((net.num_classes,), jnp.float32)},
                    **balanced_sampling(config, net), logits=logits, fold=fold,
                    train_steps=config.decouple.steps, seed_salt=SEED_SALT)


HEADS = {"crt": crt_head, "tau_norm": tau_norm_head, "lws": lws_head, "posthoc_la": posthoc_la_head}
