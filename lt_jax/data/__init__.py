"""Long-tailed data: the LT training subset, the meta set and the test set of a run.

``load(config)`` reads ``config.dataset`` and ``config.meta``: the full splits come from
``sources`` (TFDS catalog, image folder / zip, or digits), the selection from ``longtail``.
Large-scale sources (``split_file``, ``inat_json``, ``inat_tfds``: ImageNet-LT, Places-LT,
iNaturalist) ship their long-tailed split; ``split_lists`` reads it, ``grain_loader`` streams it
for full-size runs (``stream`` holds a streamed run's inputs), and ``load`` keeps it as listed, decoding it at ``dataset.image_size``.
``augment`` holds the on-device (JAX) training and evaluation transforms.
"""

import dataclasses

import numpy as np

from lt_jax import files
from lt_jax.data import longtail
from lt_jax.data import sources
from lt_jax.data import split_lists

SPLIT_NAMES = ("train", "meta", "test")
SELECTION_FILE = "data_selection.json"


@dataclasses.dataclass(frozen=True)
class Split:
  """Images (N, H, W, C) uint8, labels (N,) int32, positions (N,) int64 in the source split."""
  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class LongTailData:
  """The three splits of a run; ``meta`` may be empty (shape (0, H, W, C))."""
  train: Split
  meta: Split
  test: Split
  class_names: tuple[str, ...]
  name: str = ""
  settings: dict = dataclasses.field(default_factory=dict)  # the config fields that chose it
  skipped: tuple = ()  # images left out as unreadable (dataset.skip_bad_images): {'path', 'reason'}

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def counts(self, split: str) -> np.ndarray:
    """Per-class image counts (length C) of 'train', 'meta' or 'test'."""
    if split not in SPLIT_NAMES:
      raise ValueError(f"split={split!r} is not allowed; expected one of {list(SPLIT_NAMES)}")
    return longtail.per_class_counts(getattr(self, split).labels, self.num_classes)

  def selection(self) -> dict:
    """What ``data_selection.json`` holds for this data (``selection_record``)."""
    return selection_record(
        dataset=self.name, class_names=self.class_names,
        labels={s: getattr(self, s).labels for s in SPLIT_NAMES},
        indices={s: getattr(self, s).indices for s in SPLIT_NAMES},
        image_shape=self.train.images.shape[1:], settings=self.settings, skipped=self.skipped)


def selection_record(*, dataset: str, class_names, labels: dict, indices: dict, image_shape,
                     settings: dict, skipped=()) -> dict:
  """The one schema of ``data_selection.json``, for in-memory and streamed runs alike.

  ``counts`` and ``indices`` have a list per split (train, meta, test): per-class image counts,
  and each image's position in its source split (``settings['meta.from']`` names the meta set's
  source split when it is not ``train``); ``skipped`` lists the images left out as unreadable
  (``dataset.skip_bad_images``; empty otherwise), each {'path', 'reason'}.
  """
  counts = {s: longtail.per_class_counts(labels[s], len(class_names)).tolist() for s in SPLIT_NAMES}
  return {
      "dataset": dataset,
      "class_names": list(class_names),
      "num_classes": len(class_names),
      "counts": counts,
      "totals": {s: int(sum(c)) for s, c in counts.items()},
      "image_shape": [int(d) for d in image_shape],
      "settings": dict(settings),
      "indices": {s: np.asarray(indices[s]).tolist() for s in SPLIT_NAMES},
      "skipped": [dict(s) for s in skipped],
  }


def check_config(config) -> None:
  """Raises ValueError naming the first bad ``dataset.*`` / ``meta.*`` field."""
  dataset, meta = config.dataset, config.meta
  allowed = sources.SOURCES + split_lists.SOURCES
  if dataset.source not in allowed:
    raise ValueError(f"dataset.source={dataset.source!r} is not allowed; expected one of "
                     f"{list(allowed)}")
  longtail.check_choice("dataset.profile", dataset.profile, longtail.PROFILES)
  longtail.check_choice("dataset.protocol", dataset.protocol, longtail.PROTOCOLS)
  longtail.check_choice("dataset.test", dataset.test, longtail.TEST_SETS)
  longtail.check_choice("meta.strategy", meta.strategy, longtail.META_STRATEGIES)
  longtail.check_choice("meta.development", meta.get("development", "per_class"),
                        longtail.DEVELOPMENT_SIZES)
  for field, value in (("dataset.imbalance", dataset.imbalance),
                       ("dataset.test_imbalance", dataset.test_imbalance)):
    if not value >= 1:
      raise ValueError(f"{field}={value!r} must be >= 1 (IF = n_max / n_min; 1 = balanced)")
  if dataset.get("skip_bad_images") and dataset.source != "folder":
    raise ValueError(f"dataset.skip_bad_images=True works with dataset.source='folder' (its images "
                     f"are decoded once, when the dataset is built); dataset.source="
                     f"{dataset.source!r} names a bad image and stops when it reaches one")
  if not dataset.image_size >= 0:
    raise ValueError(f"dataset.image_size={dataset.image_size!r} must be >= 0 (0 = native size)")
  if meta.per_class < 0 or (meta.strategy != "none" and meta.per_class < 1):
    raise ValueError(f"meta.per_class={meta.per_class!r} must be >= 1 with "
                     f"meta.strategy={meta.strategy!r} (and >= 0 always)")


def settings_of(config) -> dict:
  """The config fields that determine the data, as plain JSON values."""
  dataset, meta = config.dataset, config.meta
  fields = {f"dataset.{k}": dataset[k] for k in (
      "name", "source", "path", "image_size", "imbalance", "profile", "protocol", "seed",
      "test", "test_imbalance")}
  fields.update({"meta.strategy": meta.strategy, "meta.per_class": meta.per_class,
                 "meta.development": meta.get("development", "per_class")})
  return fields


def _split(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Split:
  indices = np.asarray(indices, np.int64)
  return Split(images[indices], np.asarray(labels[indices], np.int32), indices)


def load(config) -> LongTailData:
  """The long-tailed train, meta and test splits that ``config.dataset`` / ``config.meta`` name."""
  check_config(config)
  dataset, meta = config.dataset, config.meta
  if dataset.source in split_lists.SOURCES:
    return _load_given_split(config)
  raw = sources.load_source(dataset)
  num_classes = len(raw.class_names)
  for what, labels in (("train", raw.train_labels), ("test", raw.test_labels)):
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
      raise ValueError(f"{what} labels of {dataset.name!r} fall outside [0, {num_classes})")
  train, meta_indices = longtail.select_train_meta(
      raw.train_labels, num_classes, imbalance=dataset.imbalance, profile=dataset.profile,
      protocol=dataset.protocol, strategy=meta.strategy, per_class=meta.per_class,
      seed=dataset.seed, development=meta.get("development", "per_class"))
  test = longtail.select_test(raw.test_labels, num_classes, test=dataset.test,
                              test_imbalance=dataset.test_imbalance, seed=dataset.seed)
  return LongTailData(
      train=_split(raw.train_images, raw.train_labels, train),
      meta=_split(raw.train_images, raw.train_labels, meta_indices),
      test=_split(raw.test_images, raw.test_labels, test),
      class_names=raw.class_names,
      name=dataset.name,
      settings=settings_of(config),
      skipped=raw.skipped)


def _load_given_split(config) -> LongTailData:
  """A published long-tailed split decoded in memory: train as listed (dataset.imbalance, profile
  and protocol do not apply), meta set per ``meta.strategy`` (``split_lists.select_meta``)."""
  from lt_jax.data import grain_loader  # pylint: disable=g-import-not-at-top  (imports grain)
  dataset, meta = config.dataset, config.meta
  splits, arrays = grain_loader.load_source_data(dataset)
  num_classes = splits.num_classes
  meta_split, meta_indices = split_lists.select_meta(
      arrays["train_labels"], arrays["val_labels"], num_classes, strategy=meta.strategy,
      per_class=meta.per_class, seed=dataset.seed,
      development=meta.get("development", "per_class"))
  meta_split = meta_split or "train"
  test = longtail.select_test(arrays["test_labels"], num_classes, test=dataset.test,
                              test_imbalance=dataset.test_imbalance, seed=dataset.seed)
  return LongTailData(
      train=_split(arrays["train_images"], arrays["train_labels"],
                   np.arange(len(arrays["train_labels"]))),
      meta=_split(arrays[f"{meta_split}_images"], arrays[f"{meta_split}_labels"], meta_indices),
      test=_split(arrays["test_images"], arrays["test_labels"], test),
      class_names=splits.class_names,
      name=dataset.name,
      settings={**settings_of(config), "meta.from": meta_split})


def save_selection(record: dict, workdir: str) -> str:
  """Writes a ``selection_record`` to ``workdir/data_selection.json`` atomically; returns the path."""
  return files.write_json_atomic(files.join(workdir, SELECTION_FILE), record)


def read_selection(workdir: str) -> dict:
  """The ``data_selection.json`` of a run's workdir."""
  return files.read_json(files.join(workdir, SELECTION_FILE), "the data selection of an lt_jax run")


def channel_stats(images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and (population) std in [0, 1] of uint8 (N, H, W, C) images, as float32.

  Exact, from a 256-bin histogram per channel (no float copy of the images).
  """
  images = np.asarray(images_uint8)
  if images.dtype != np.uint8 or images.ndim != 4 or not images.size:
    raise ValueError(f"channel_stats needs non-empty uint8 (N, H, W, C) images, got "
                     f"{images.dtype} {images.shape}")
  values = np.arange(256, dtype=np.float64) / 255
  means, stds = [], []
  for c in range(images.shape[-1]):
    hist = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
    mean = hist @ values / hist.sum()
    means.append(mean)
    stds.append(np.sqrt(hist @ (values - mean)**2 / hist.sum()))
  return np.asarray(means, np.float32), np.asarray(stds, np.float32)


__all__ = ["Split", "LongTailData", "load", "selection_record", "save_selection", "read_selection",
           "channel_stats", "check_config"]
