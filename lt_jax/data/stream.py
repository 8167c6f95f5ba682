"""The inputs of a streamed run (``loader.stream=True``): split lists, meta / test selection, batches.

The uint8 training set stays on disk: each host's ``grain_loader.TrainLoader`` decodes,
random-resized-crops and flips its B/P images per step; ``global_batch`` assembles the hosts'
local batches into global arrays sharded over the ``data`` mesh axis.
"""

import dataclasses
import os

import jax
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from lt_jax import parallel
from lt_jax.data import longtail
from lt_jax.data import split_lists


@dataclasses.dataclass(frozen=True)
class StreamData:
  """A streamed run's splits: the listed training set, the meta records (or None), the test records."""
  splits: split_lists.SplitLists
  meta: split_lists.ImageRecords | None
  meta_split: str
  meta_indices: np.ndarray
  test: split_lists.ImageRecords
  test_indices: np.ndarray


def load(config, needs_meta: bool) -> StreamData:
  """The split lists of ``config.dataset`` (the miniature written first for ``:smoke`` configs),
  the meta set (``meta.strategy``, ``meta.per_class``) and the test set (``dataset.test``)."""
  dataset = config.dataset
  if dataset.get("miniature") and not os.path.exists(dataset.path):
    from lt_jax.data import miniature  # pylint: disable=g-import-not-at-top
    miniature.write(dataset.miniature, dataset.path)
  splits = split_lists.load_split_lists(dataset)
  meta_split, meta_idx, meta = "", np.zeros((0,), np.int64), None
  if needs_meta:
    meta_split, meta_idx = split_lists.select_meta(
        splits.train.labels, None if splits.val is None else splits.val.labels, splits.num_classes,
        strategy=config.meta.strategy, per_class=config.meta.per_class, seed=dataset.seed,
        development=config.meta.get("development", "per_class"))
    meta = getattr(splits, meta_split).subset(meta_idx, "meta") if meta_split else None
  test_idx = longtail.select_test(splits.test.labels, splits.num_classes, test=dataset.test,
                                  test_imbalance=dataset.test_imbalance, seed=dataset.seed)
  test = splits.test if len(test_idx) == len(splits.test) else splits.test.subset(test_idx, "test")
  return StreamData(splits, meta, meta_split, np.asarray(meta_idx, np.int64), test,
                    np.asarray(test_idx, np.int64))


def global_batch(local: dict, mesh) -> dict:
  """Each host's numpy batch -> global arrays split over the ``data`` axis (ids as int32)."""
  sharding = NamedSharding(mesh, PartitionSpec(parallel.AXIS))
  cast = {"ids": np.int32, "labels": np.int32, "meta_ids": np.int32, "meta_labels": np.int32}
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v, cast.get(k, v.dtype)))
          for k, v in local.items()}


def next_batch(train_loader, meta_loader) -> dict:
  """The next host-local batch; with a meta loader also ``meta_images`` and ``meta_labels``."""
  batch = next(train_loader)
  batch = {"images": batch["images"], "labels": batch["labels"], "ids": batch["ids"]}
  if meta_loader is not None:
    meta = next(meta_loader)
    batch.update(meta_images=meta["images"], meta_labels=meta["labels"])
  return batch
