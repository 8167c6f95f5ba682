"""On-device augmentation and normalisation: pure JAX, jittable, vectorised over the batch.

Images are (N, H, W, C). ``random_crop_flip`` keeps the input dtype (uint8 in, uint8 out), so
the batch stays small until ``normalize`` turns it into float32.
"""

import jax
import jax.numpy as jnp

PAD_MODES = ("constant", "reflect")


def pad_images(images: jax.Array, pad: int, pad_mode: str) -> jax.Array:
  """Pads height and width by ``pad`` on each side: zeros, or reflection as torch's reflect pad.

  ``reflect`` mirrors without repeating the edge pixel (numpy's and torch's 'reflect'); it
  needs pad < H and pad < W.
  """
  if pad_mode not in PAD_MODES:
    raise ValueError(f"augment.pad_mode={pad_mode!r} is not allowed; expected one of "
                     f"{list(PAD_MODES)}")
  if pad < 0:
    raise ValueError(f"augment.pad={pad!r} must be >= 0")
  height, width = images.shape[1:3]
  if pad_mode == "reflect" and pad >= min(height, width):
    raise ValueError(f"augment.pad={pad} must be smaller than the image ({height}x{width}) "
                     "with augment.pad_mode='reflect'")
  widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jnp.pad(images, widths, mode=pad_mode)


def crop_at(padded: jax.Array, offsets: jax.Array, height: int, width: int) -> jax.Array:
  """Per-sample (height, width) windows of ``padded`` whose top-left corners are ``offsets``."""

  def crop_one(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                 (height, width, image.shape[-1]))

  return jax.vmap(crop_one)(padded, offsets)


def crop_flip_draws(rng: jax.Array, batch: int, *, pad: int) -> dict:
  """The per-sample randomness of ``random_crop_flip``: crop offsets in [0, 2 * pad] per axis
  (batch, 2) and flips (batch,). Drawn for a whole global batch, then sliced per device, so a
  device augments only its share and the global batch does not depend on the device count."""
  crop_key, flip_key = jax.random.split(rng)
  return {"offsets": jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1),
          "mirror": jax.random.bernoulli(flip_key, 0.5, (batch,))}


def apply_crop_flip(images: jax.Array, draws: dict, *, pad: int, pad_mode: str = "constant",
                    crop: bool = True, flip: bool = True) -> jax.Array:
  """Pad + crop back to the input size at ``draws['offsets']``, flip where ``draws['mirror']``."""
  height, width = images.shape[1:3]
  if crop and pad > 0:
    images = crop_at(pad_images(images, pad, pad_mode), draws["offsets"], height, width)
  if flip:
    images = jnp.where(draws["mirror"][:, None, None, None], images[:, :, ::-1, :], images)
  return images


def random_crop_flip(rng: jax.Array, images: jax.Array, *, pad: int, pad_mode: str = "constant",
                     crop: bool = True, flip: bool = True) -> jax.Array:
  """Pad + random crop back to the input size, and a random horizontal flip (p = 0.5).

  Every sample draws its own crop offset in [0, 2 * pad] per axis and its own flip. Returns the
  input dtype (uint8 stays uint8).
  """
  draws = crop_flip_draws(rng, images.shape[0], pad=pad)
  return apply_crop_flip(images, draws, pad=pad, pad_mode=pad_mode, crop=crop, flip=flip)


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 -> float32 in [0, 1], then (x - mean) / std per channel (last axis)."""
  x = jnp.asarray(images, jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def train_transform(rng: jax.Array, images: jax.Array, aug_cfg, mean, std) -> jax.Array:
  """Crop / flip as ``config.augment`` enables them, then normalise."""
  return transform_drawn(images, crop_flip_draws(rng, images.shape[0], pad=int(aug_cfg.pad)),
                         aug_cfg, mean, std)


def transform_drawn(images: jax.Array, draws: dict, aug_cfg, mean, std) -> jax.Array:
  """``train_transform`` with its randomness given (``crop_flip_draws``, maybe sliced)."""
  images = apply_crop_flip(images, draws, pad=int(aug_cfg.pad), pad_mode=aug_cfg.pad_mode,
                           crop=bool(aug_cfg.crop), flip=bool(aug_cfg.flip))
  return normalize(images, mean, std)


def eval_transform(images: jax.Array, mean, std) -> jax.Array:
  """Normalisation only."""
  return normalize(images, mean, std)
