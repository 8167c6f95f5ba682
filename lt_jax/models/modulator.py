"""The MFM modulator network M_phi: soft label -> per-sample (gamma_i, beta_i) at each modulated point.

An MLP (one hidden ReLU layer) maps the unmodulated network's soft label to one vector, split into
gamma and beta and reshaped across the modulated points, laid out [gamma_1, beta_1, gamma_2, ...]
in the order of the points. Optionally (MFM appendix A.2, Fig. 6) the MLP emits a compressed
vector "dimidiated" into gamma-hat (m values) and beta-hat (m values), and a fixed, parameter-free
weight-hashing layer of "two hash mappings" decompresses gamma-hat -> every gamma entry and
beta-hat -> every beta entry: theta(i) = x(kappa(i)) * zeta(i), kappa a fixed random index into
the vector's own half, zeta a fixed random sign (appendix A.1). The output variant turns raw values into (gamma, beta):

* ``mfm`` (the paper's): gamma = C_k softmax(raw) over the C_k channels, beta free;
* ``film``: gamma = 1 + raw, beta free (both free; the 1 makes a zero output the identity);
* ``channel_attention``: gamma = sigmoid(raw), beta = 0;
* ``gated_attention``: gamma = softmax(raw), beta = 0.

Ablations: ``zero_beta`` (beta := 0) and ``unit_gamma`` (gamma := 1).
"""

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = ("mfm", "film", "channel_attention", "gated_attention")


def output_size(points: Mapping[str, int]) -> int:
  """Length of the full (uncompressed) output: gamma and beta for every channel of every point."""
  return 2 * sum(points.values())


def is_beta(points: Mapping[str, int]) -> np.ndarray:
  """(2 sum C_k,) bool: True where the raw output layout [gamma_1, beta_1, gamma_2, ...] holds beta."""
  return np.concatenate([np.repeat([False, True], channels) for channels in points.values()])


def hashing_indices(points: Mapping[str, int], compressed_size: int, seed: int = 0):
  """The fixed kappa and zeta of the two hash maps, over the full raw output layout.

  The compressed vector is [gamma-hat (m), beta-hat (m)], m = ``compressed_size``: a gamma entry's
  kappa indexes gamma-hat (0..m-1), a beta entry's indexes beta-hat (m..2m-1); zeta is a sign.
  """
  beta = is_beta(points)
  rng = np.random.default_rng(seed)
  kappa = rng.integers(0, compressed_size, size=len(beta)) + compressed_size * beta
  zeta = rng.choice(np.array([-1.0, 1.0], np.float32), size=len(beta))
  return kappa, zeta


def split_modulation(raw, points: Mapping[str, int], variant: str, *, zero_beta: bool = False,
                     unit_gamma: bool = False) -> dict:
  """Splits raw (N, 2 sum C_k) outputs into {point: (gamma (N, C_k), beta (N, C_k))}."""
  if variant not in VARIANTS:
    raise ValueError(f"mfm.variant={variant!r} is unknown; expected one of {list(VARIANTS)}")
  modulation, offset = {}, 0
  for name, channels in points.items():
    raw_gamma = raw[:, offset:offset + channels]
    raw_beta = raw[:, offset + channels:offset + 2 * channels]
    offset += 2 * channels
    if variant == "mfm":
      gamma, beta = channels * jax.nn.softmax(raw_gamma, axis=-1), raw_beta
    elif variant == "film":
      gamma, beta = 1.0 + raw_gamma, raw_beta
    elif variant == "channel_attention":
      gamma, beta = jax.nn.sigmoid(raw_gamma), jnp.zeros_like(raw_beta)
    else:
      gamma, beta = jax.nn.softmax(raw_gamma, axis=-1), jnp.zeros_like(raw_beta)
    if unit_gamma:
      gamma = jnp.ones_like(gamma)
    if zero_beta:
      beta = jnp.zeros_like(beta)
    modulation[name] = (gamma, beta)
  return modulation


class Modulator(nn.Module):
  """M_phi: soft label (N, C) -> raw modulation vector (N, 2 sum_k C_k).

  ``compressed_size`` m > 0 makes the MLP emit 2m values, gamma-hat then beta-hat, each expanded
  by its own fixed hash map (``hashing_indices``).
  The output layer starts at zero, so the first modulation is the variant's neutral point
  (gamma = 1 for ``mfm`` and ``film``).
  """
  point_channels: Sequence[tuple[str, int]]
  hidden: int = 100
  compressed_size: int = 0
  hashing_seed: int = 0

  @nn.compact
  def __call__(self, soft_labels):
    points = dict(self.point_channels)
    out = 2 * self.compressed_size if self.compressed_size else output_size(points)
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(soft_labels))
    raw = nn.Dense(out, kernel_init=nn.initializers.zeros, name="out")(h)
    if self.compressed_size:
      kappa, zeta = hashing_indices(points, self.compressed_size, self.hashing_seed)
      raw = raw[:, kappa] * zeta
    return raw
