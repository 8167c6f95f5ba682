"""What a two-phase method builds on: the frozen phase-I network and the phase-II ``Head`` it trains.

A two-phase method (FSA, the decoupled classifiers) is ``make_head(config, frozen) -> Head``;
``lt_jax.two_phase`` loads or trains phase I, hands it over as a ``FrozenNet`` and fits the head
in the one training loop. A head never touches images: it names the training samples of a step
(``sample``) and turns their normalised images into features (``features``); the feed in between
(the uint8 arrays on the device, or the streamed decoder) is ``two_phase``'s.
"""

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from lt_jax.data import augment
from lt_jax.models import layers


@dataclasses.dataclass(frozen=True)
class FrozenNet:
  """A finished phase-I run: network w (eval-mode BatchNorm), its normalisation, its training labels.

  train_logits: () -> (logits (N, C), labels (N,)) of w on the un-augmented training set, from
    whichever feed holds the images (rows in any order, each with its label).
  """
  config: ml_collections.ConfigDict  # the phase-I run's config
  workdir: str
  model: Any
  params: Any
  batch_stats: Any
  mean: np.ndarray
  std: np.ndarray
  train_labels: np.ndarray
  class_counts: np.ndarray
  class_names: tuple[str, ...]
  train_logits: Callable[[], tuple[np.ndarray, np.ndarray]]

  @property
  def num_classes(self) -> int:
    return len(self.class_counts)


@dataclasses.dataclass(frozen=True)
class Head:
  """What a phase-II method trains.

  init: the head pytree (classifier parameters, LWS scales, ...).
  sample: key -> ids (B,) int32 of the training samples of a step (class-aware / tail sampling);
    None when there is nothing to train (post-hoc heads).
  features: (key, head, images, ids) -> (pooled features (B', D), labels (B',), extra metrics)
    from the normalised images (B, H, W, C) of ``ids`` (FSA synthesises B' - B of them). No
    gradient flows through it (the backbone is frozen).
  augment: whether phase-II images get phase I's crop / flip (else the evaluation transform).
  logits: (head, pooled) -> logits.
  fold: (head, phase-I params) -> params of a plain network that predicts with the head.
  train_steps: iterations to train (0: evaluate the head as it is).
  seed_salt: phase-II randomness is fold_in(key(config.seed), seed_salt).
  description: printed when phase II starts; files: {name: JSON value} written beside the run.
  """
  init: Any
  sample: Callable | None
  features: Callable | None
  logits: Callable | None
  fold: Callable
  train_steps: int
  seed_salt: int
  augment: bool = True
  description: str = ""
  files: dict = dataclasses.field(default_factory=dict)


def _variables(params, batch_stats) -> dict:
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def frozen_maps(net: FrozenNet, images, stage: int | None = None):
  """Eval-mode pre-pooling map of the last stage (``stage=None``) or the map after ``stage``."""
  variables = _variables(net.params, net.batch_stats)
  if stage is None:
    return net.model.apply(variables, images, train=False, return_features=True)[1]
  return net.model.apply(variables, images, train=False, to_stage=stage)


def frozen_maps_from(net: FrozenNet, maps, stage: int):
  """Eval-mode last-stage map computed from the map after ``stage``."""
  variables = _variables(net.params, net.batch_stats)
  return net.model.apply(variables, maps, train=False, from_stage=stage, return_features=True)[1]


def classifier_module(net: FrozenNet) -> layers.Classifier:
  return layers.Classifier(net.num_classes, net.config.model.classifier)


def classifier_logits(net: FrozenNet, classifier_params, pooled):
  """The phase-I model's classifier on pooled features (N, D)."""
  return classifier_module(net).apply({"params": classifier_params}, pooled)


def with_classifier(classifier, base_params) -> dict:
  """Phase-I params with the classifier replaced."""
  return {**base_params, "classifier": classifier}


def augmented_images(key, images_uint8, ids, net: FrozenNet, enabled: bool):
  """Normalised images of ``ids``, with the phase-I run's crop / flip when ``enabled``."""
  images = images_uint8[ids]
  if enabled:
    return augment.train_transform(key, images, net.config.augment, net.mean, net.std)
  return augment.eval_transform(images, net.mean, net.std)


def phase2_key(seed: int, salt: int) -> jax.Array:
  """The base key of a phase-II run: ``rbg`` bits (XLA's RngBitGenerator), which compile in a
  fraction of threefry's time; deterministic for a seed on a given backend."""
  return jax.random.fold_in(jax.random.key(seed, impl="rbg"), salt)
