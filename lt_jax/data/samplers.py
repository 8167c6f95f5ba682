"""Class-aware batch samplers, on device: the class c ~ p_c, then a training sample of c uniformly.

``dataset.sampler`` picks the training batches of any method:

* ``instance``: every sample equally often (p_c proportional to n_c); an epoch is a permutation
  of the training set, visited without replacement (the default; the papers' setting);
* ``class_balanced``: p_c = 1 / C (Kang et al.'s class-balanced sampling, cRT);
* ``sqrt``: p_c proportional to sqrt(n_c) (square-root sampling, Mahajan et al.);
* ``reversed``: p_c proportional to 1 / n_c (BBN's reversed sampler, w_c = n_max / n_c).

Class-aware samplers draw with replacement, a fresh batch per step; an epoch is still
ceil(N / B) steps.
"""

import jax
import jax.numpy as jnp
import numpy as np

SAMPLERS = ("instance", "class_balanced", "sqrt", "reversed")


def class_probabilities(counts, kind: str) -> np.ndarray:
  """p_c of drawing class c for sampler ``kind`` (classes without samples get 0)."""
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  if kind == "instance":
    weights = counts
  elif kind == "class_balanced":
    weights = present.astype(np.float64)
  elif kind == "sqrt":
    weights = np.sqrt(counts)
  elif kind == "reversed":
    weights = np.where(present, 1.0 / np.where(present, counts, 1.0), 0.0)
  else:
    raise ValueError(f"dataset.sampler={kind!r} is unknown; expected one of {list(SAMPLERS)}")
  return weights / weights.sum()


def class_index(labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
  """Sample ids grouped by class: ``order`` (ids sorted by label), ``starts`` and ``counts`` (C,)."""
  labels = np.asarray(labels)
  counts = np.bincount(labels, minlength=num_classes).astype(np.int32)
  return {"order": np.argsort(labels, kind="stable").astype(np.int32),
          "starts": (np.cumsum(counts) - counts).astype(np.int32), "counts": counts}


def ids_in_classes(key: jax.Array, index: dict, classes: jax.Array) -> jax.Array:
  """One training id drawn uniformly among each class's samples, for every entry of ``classes``."""
  counts = jnp.asarray(index["counts"])[classes]
  offsets = jnp.floor(jax.random.uniform(key, classes.shape) * counts).astype(jnp.int32)
  positions = jnp.asarray(index["starts"])[classes] + jnp.minimum(offsets, counts - 1)
  return jnp.asarray(index["order"])[positions]


def sample_ids(key: jax.Array, index: dict, probs, batch_size: int) -> jax.Array:
  """``batch_size`` training ids: class c ~ Categorical(p), then uniformly among c's samples."""
  class_key, member_key = jax.random.split(key)
  probs = jnp.asarray(probs, jnp.float32)
  classes = jax.random.choice(class_key, probs.shape[0], (batch_size,), p=probs)
  return ids_in_classes(member_key, index, classes)


def ids_from_pool(key: jax.Array, pool: jax.Array, num: int) -> jax.Array:
  """``num`` ids drawn uniformly with replacement from ``pool``."""
  return pool[jax.random.randint(key, (num,), 0, pool.shape[0])]
