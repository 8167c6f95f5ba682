"""Shared test fixtures: tiny configs, contexts, states and batches for method steps."""

import jax
import numpy as np
import pytest

from lt_jax import methods
from lt_jax import train

NUM_CLASSES = 4
IMAGE_SHAPE = (8, 8, 1)


def tiny_config(config_module, **fields):
  """``config_module``'s :smoke config shrunk further; ``fields`` maps 'a.b' to values."""
  config = config_module.get_config("smoke")
  config.model.width = 2
  return set_fields(config, fields)


def set_fields(config, fields: dict):
  """``config`` with each 'a.b' of ``fields`` set to its value."""
  for name, value in fields.items():
    *path, last = name.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


def context(config, counts):
  """The run context of ``config`` on a training set with these per-class counts."""
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  return train.build_context(config, class_counts=np.asarray(counts), train_labels=labels)


def step_setup(config, counts=(24, 12, 6, 3), batch_size=6, meta_batch=4, seed=0,
               image_shape=IMAGE_SHAPE):
  """(ctx, method, state, batch) for a method step on random normalised images."""
  config.train.batch_size = batch_size
  ctx = context(config, counts)
  method = methods.get_method(config.method)
  state = train.init_state(config, ctx, method, image_shape)
  rng = np.random.default_rng(seed)
  batch = {
      "images": rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
      "labels": rng.integers(0, len(counts), batch_size).astype(np.int32),
      "ids": rng.choice(sum(counts), batch_size, replace=False).astype(np.int32),
      "meta_images": rng.normal(size=(meta_batch, *image_shape)).astype(np.float32),
      "meta_labels": np.arange(meta_batch, dtype=np.int32) % len(counts),
  }
  return ctx, method, state, jax.tree.map(jax.numpy.asarray, batch)


@pytest.fixture
def x64():
  """Float64 inside one test only."""
  with jax.enable_x64(True):
    yield
