"""Long-tailed selection: per-class counts, the LT training subset, meta sets and test sets.

Pure numpy, deterministic from ``dataset.seed``. Every function returns positions into the full
source split (train or test), sorted ascending.

Random streams:
- the training subset uses ``np.random.RandomState(seed)`` exactly as LDAM-DRW's
  ``gen_imbalanced_data`` does (per class, in label order: shuffle that class's indices, keep the
  first n_i), so on data in the original CIFAR order seed 0 picks LDAM's subset; under the
  ``mwnet`` protocol the same stream first carves the meta images (MW-Net's ``build_dataset``);
- the meta set drawn from leftovers (``ldam`` + ``meta``), the development copies and the test
  subsets each use their own ``np.random.default_rng((seed, stream))``, so switching
  ``meta.strategy`` or ``dataset.test`` never changes the training subset.
"""

from collections.abc import Sequence

import numpy as np

PROFILES = ("exp", "step")
PROTOCOLS = ("ldam", "mwnet")
META_STRATEGIES = ("none", "meta", "development")
# meta.development: how many development copies each class gets (MFM line 129 "20 samples (or the
# number of the least frequent class when it is less than 20) per class"): per_class = min(K, n_c);
# equal = min(K, n_min) for every class (§3.1, line 69: a meta set "with equal samples per class").
DEVELOPMENT_SIZES = ("per_class", "equal")
TEST_SETS = ("balanced", "test1", "test2")

_META_STREAM, _DEVELOPMENT_STREAM, _TEST_STREAM = 1, 2, 3


def check_choice(field: str, value: str, allowed: Sequence[str]) -> str:
  """Returns ``value`` or raises ValueError naming ``field`` and the allowed values."""
  if value not in allowed:
    raise ValueError(f"{field}={value!r} is not allowed; expected one of {list(allowed)}")
  return value


def imbalanced_counts(n_max: int, num_classes: int, imbalance: float,
                      profile: str = "exp") -> np.ndarray:
  """Per-class counts, head class first, with the peers' float arithmetic.

  Args:
    n_max: images of the head class.
    num_classes: C.
    imbalance: IF = n_max / n_min, >= 1 (1 = balanced).
    profile: ``exp``: n_i = int(n_max * (1/IF)**(i/(C-1))); ``step``: the first C//2 classes get
      n_max, the rest int(n_max/IF) (LDAM's ``imb_type='step'``).

  Returns:
    int64 array of length C.
  """
  check_choice("dataset.profile", profile, PROFILES)
  if not imbalance >= 1:
    raise ValueError(f"dataset.imbalance={imbalance!r} must be >= 1 (IF = n_max / n_min)")
  if num_classes < 1 or n_max < 0:
    raise ValueError(f"need num_classes >= 1 and n_max >= 0, got {num_classes} and {n_max}")
  imb_factor = 1 / imbalance
  if profile == "exp":
    denominator = max(num_classes - 1, 1)
    counts = [int(n_max * imb_factor**(i / denominator)) for i in range(num_classes)]
  else:
    half = num_classes // 2
    counts = [n_max] * half + [int(n_max * imb_factor)] * (num_classes - half)
  return np.asarray(counts, np.int64)


def class_indices(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
  """Positions of each class in ``labels``, ascending."""
  labels = np.asarray(labels)
  return [np.flatnonzero(labels == c) for c in range(num_classes)]


def per_class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Images per class, length C."""
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]


def _sorted_union(parts: Sequence[np.ndarray]) -> np.ndarray:
  """Concatenation of index arrays, sorted, as int64."""
  if not parts:
    return np.zeros((0,), np.int64)
  return np.sort(np.concatenate([np.asarray(p, np.int64) for p in parts]))


def _take_per_class(pools: Sequence[np.ndarray], counts: Sequence[int],
                    shuffle) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Per class: ``shuffle`` the pool in place, keep the first n_c; returns (kept, rest)."""
  kept, rest = [], []
  for pool, n in zip(pools, counts):
    pool = np.array(pool, np.int64)
    shuffle(pool)
    kept.append(pool[:n])
    rest.append(pool[n:])
  return kept, rest


def development_sizes(counts: Sequence[int], per_class: int, development: str = "per_class") -> np.ndarray:
  """Development copies per class (``meta.development``): min(K, n_c), or min(K, n_min) for all."""
  check_choice("meta.development", development, DEVELOPMENT_SIZES)
  counts = np.asarray(counts, np.int64)
  cap = counts if development == "per_class" else np.full_like(counts, counts.min())
  return np.minimum(cap, per_class)


def select_train_meta(labels: np.ndarray, num_classes: int, *, imbalance: float, profile: str,
                      protocol: str, strategy: str, per_class: int,
                      seed: int, development: str = "per_class") -> tuple[np.ndarray, np.ndarray]:
  """The long-tailed training subset and the meta set of a full training split.

  Args:
    labels: labels of the full training split.
    num_classes: C.
    imbalance: ``dataset.imbalance``.
    profile: ``dataset.profile`` (exp | step).
    protocol: ``ldam``: n_max = the smallest full class; ``mwnet``: carve ``per_class`` images
      per class first, then n_max = smallest full class - ``per_class``.
    strategy: ``meta.strategy``: none (empty meta) | meta (disjoint from training) |
      development (copies of training images: ``development_sizes`` per class).
    per_class: ``meta.per_class`` (M or K).
    seed: ``dataset.seed``.
    development: ``meta.development`` (per_class | equal).

  Returns:
    (train, meta) positions into the full training split, each sorted.
  """
  check_choice("dataset.protocol", protocol, PROTOCOLS)
  check_choice("meta.strategy", strategy, META_STRATEGIES)
  if per_class < 0 or (strategy != "none" and per_class < 1):
    raise ValueError(f"meta.per_class={per_class!r} must be >= 1 with meta.strategy={strategy!r}"
                     " (and >= 0 always)")
  pools = class_indices(labels, num_classes)
  full = per_class_counts(labels, num_classes)
  if full.min() == 0:
    empty = [c for c in range(num_classes) if full[c] == 0]
    raise ValueError(f"classes {empty} have no training images; every class needs some")
  rng = np.random.RandomState(seed)
  carved = None
  if protocol == "mwnet":
    if per_class >= full.min():
      raise ValueError(f"meta.per_class={per_class} leaves no training images under "
                       f"dataset.protocol='mwnet': the smallest class has {full.min()} images")
    carved, pools = _take_per_class(pools, [per_class] * num_classes, rng.shuffle)
  counts = imbalanced_counts(int(min(len(p) for p in pools)), num_classes, imbalance, profile)
  train, leftovers = _take_per_class(pools, counts, rng.shuffle)
  if strategy == "none":
    meta = []
  elif strategy == "meta":
    meta = carved if carved is not None else _meta_from_leftovers(leftovers, per_class, seed)
  else:
    meta = _development_copies(train, development_sizes([len(p) for p in train], per_class,
                                                        development), seed)
  return _sorted_union(train), _sorted_union(meta)


def _meta_from_leftovers(leftovers: Sequence[np.ndarray], per_class: int,
                         seed: int) -> list[np.ndarray]:
  """M images per class from those the LT selection did not keep (``ldam`` + ``meta``)."""
  for c, pool in enumerate(leftovers):
    if len(pool) < per_class:
      raise ValueError(
          f"meta.per_class={per_class} is too large: class {c} has only {len(pool)} images left "
          "after the long-tailed selection; lower meta.per_class or set dataset.protocol='mwnet' "
          "(carves the meta images before imbalancing)")
  rng = np.random.default_rng((seed, _META_STREAM))
  return [rng.permutation(pool)[:per_class] for pool in leftovers]


def _development_copies(train: Sequence[np.ndarray], sizes: Sequence[int],
                        seed: int) -> list[np.ndarray]:
  """``sizes[c]`` images of class c copied from the LT training set."""
  rng = np.random.default_rng((seed, _DEVELOPMENT_STREAM))
  return [rng.permutation(np.sort(pool))[:k] for pool, k in zip(train, sizes)]


def test_counts(n_max: int, num_classes: int, test: str, test_imbalance: float,
                seed: int) -> np.ndarray | None:
  """Per-class test counts of MFM's imbalanced test sets (appendix C.1); None for balanced.

  ``test1``: the exp profile with IF = ``test_imbalance`` reversed (the tail class gets the
  most), then the first C//2 classes (the training head) all cut to the smallest count among
  them, so the head is flat and the tail rises. ``test2``: the exp profile permuted over the
  classes by a seeded permutation.
  """
  check_choice("dataset.test", test, TEST_SETS)
  if test == "balanced":
    return None
  if not test_imbalance >= 1:
    raise ValueError(f"dataset.test_imbalance={test_imbalance!r} must be >= 1")
  counts = imbalanced_counts(n_max, num_classes, test_imbalance, "exp")
  if test == "test1":
    counts = counts[::-1].copy()
    half = num_classes // 2
    if half:
      counts[:half] = counts[:half].min()
    return counts
  rng = np.random.default_rng((seed, _TEST_STREAM))
  return counts[rng.permutation(num_classes)]


def select_test(labels: np.ndarray, num_classes: int, *, test: str, test_imbalance: float,
                seed: int) -> np.ndarray:
  """Positions into the full test split: all of it, or a seeded per-class subset (test1/test2)."""
  full = per_class_counts(labels, num_classes)
  counts = test_counts(int(full.min()), num_classes, test, test_imbalance, seed)
  if counts is None:
    return np.arange(len(labels), dtype=np.int64)
  rng = np.random.default_rng((seed, _TEST_STREAM + 1))
  kept, _ = _take_per_class(class_indices(labels, num_classes), counts, rng.shuffle)
  return _sorted_union(kept)
