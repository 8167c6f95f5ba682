"""On-device augmentation: padding, crops, flips, determinism and normalisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from lt_jax.data import augment


def random_images(n=16, height=8, width=6, channels=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, height, width, channels), np.uint8)


def windows(padded, height, width):
  """Every (height, width) window of a padded image, keyed by its top-left corner."""
  return {(y, x): padded[y:y + height, x:x + width]
          for y in range(padded.shape[0] - height + 1)
          for x in range(padded.shape[1] - width + 1)}


def test_zero_pad_and_centre_crop_is_the_identity():
  images = random_images()
  padded = augment.pad_images(jnp.asarray(images), 3, "constant")
  assert padded.shape == (16, 14, 12, 3)
  assert not np.asarray(padded)[:, :3].any() and not np.asarray(padded)[:, :, -3:].any()
  offsets = jnp.full((16, 2), 3, jnp.int32)
  np.testing.assert_array_equal(augment.crop_at(padded, offsets, 8, 6), images)


def test_reflect_pad_matches_numpy():
  images = random_images()
  widths = ((0, 0), (4, 4), (4, 4), (0, 0))
  np.testing.assert_array_equal(augment.pad_images(jnp.asarray(images), 4, "reflect"),
                                np.pad(images, widths, mode="reflect"))
  with pytest.raises(ValueError, match="augment.pad=6"):
    augment.pad_images(jnp.asarray(images), 6, "reflect")
  with pytest.raises(ValueError, match=r"augment.pad_mode.*\['constant', 'reflect'\]"):
    augment.pad_images(jnp.asarray(images), 2, "edge")


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_every_crop_is_a_window_of_the_padded_image(pad_mode):
  images = random_images(n=32)
  out = np.asarray(augment.random_crop_flip(jax.random.key(1), jnp.asarray(images), pad=2,
                                            pad_mode=pad_mode, flip=False))
  assert out.shape == images.shape and out.dtype == np.uint8
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode=pad_mode)
  corners = set()
  for image, pad_image in zip(out, padded):
    found = [c for c, w in windows(pad_image, 8, 6).items() if np.array_equal(w, image)]
    assert found, "an output is not a window of its padded input"
    corners.add(found[0])
  assert len(corners) > 5  # per-sample offsets


def test_flip_is_exact_and_per_sample():
  images = random_images(n=64)
  out = np.asarray(augment.random_crop_flip(jax.random.key(2), jnp.asarray(images), pad=4,
                                            crop=False, flip=True))
  same = [np.array_equal(o, i) for o, i in zip(out, images)]
  mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 10 < sum(mirrored) < 54


def test_same_key_same_output_and_keys_differ():
  images = jnp.asarray(random_images())
  crop_flip = jax.jit(functools.partial(augment.random_crop_flip, pad=4, pad_mode="reflect"))
  first = crop_flip(jax.random.key(7), images)
  np.testing.assert_array_equal(first, crop_flip(jax.random.key(7), images))
  assert not np.array_equal(first, crop_flip(jax.random.key(8), images))


def test_disabled_augmentation_is_the_identity():
  images = jnp.asarray(random_images())
  out = augment.random_crop_flip(jax.random.key(0), images, pad=4, crop=False, flip=False)
  np.testing.assert_array_equal(out, images)
  out = augment.random_crop_flip(jax.random.key(0), images, pad=0, crop=True, flip=False)
  np.testing.assert_array_equal(out, images)


def test_normalisation_per_channel():
  images = random_images()
  mean, std = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.25, 0.5])
  out = augment.normalize(jnp.asarray(images), mean, std)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, (images / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(augment.eval_transform(jnp.asarray(images), mean, std), out)


def test_train_transform_reads_the_augment_config():
  config = default.get_config()
  config.augment.crop, config.augment.flip = False, False
  images = jnp.asarray(random_images())
  mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
  transform = jax.jit(lambda key, x: augment.train_transform(key, x, config.augment, mean, std))
  np.testing.assert_allclose(transform(jax.random.key(0), images),
                             augment.eval_transform(images, mean, std), rtol=1e-6, atol=1e-6)
  config.augment.crop, config.augment.flip, config.augment.pad_mode = True, True, "reflect"
  out = augment.train_transform(jax.random.key(0), images, config.augment, mean, std)
  assert out.shape == images.shape and out.dtype == jnp.float32
