"""Large-scale long-tailed data (ImageNet-LT, Places-LT, iNaturalist 2017 / 2018): loaders and API.

Two ways in:

1. Streaming, for full-size runs (the uint8 training set does not fit on a device):
   ``splits = load_split_lists(config.dataset)``, then
   ``make_train_loader(config, splits.train)`` -> an endless iterator of numpy batches
   ``{'images': uint8 (B_host, S, S, 3), 'labels': int32 (B_host,), 'ids': int64 (B_host,)}``
   with ``get_state() / set_state(state)`` (bytes, for the checkpoint), and
   ``make_eval_loader(config, splits.test)`` -> one pass of ``{'images', 'labels', 'ids',
   'mask'}`` batches padded to a fixed shape (mask False on padding). Images stay uint8; normalise
   on the device (``augment.normalize``).
2. In memory, for miniatures and small image sizes: ``lt_jax.data.load(config)`` with a
   large-scale ``dataset.source`` decodes every image at ``dataset.image_size`` through
   ``load_source_data`` and runs the existing on-device loop.

Pipeline (grain ``DataLoader`` over a random-access source of encoded images):
- ``IndexSampler``: a fresh global shuffle per epoch from ``seed``, endless; per-host sharding by
  ``ShardOptions(jax.process_index(), jax.process_count(), drop_remainder=True)``: each host owns
  a fixed, disjoint 1/P of the records and shuffles within it;
- decode + random-resized-crop (torchvision's: area in [min_crop_area, 1], aspect in [3/4, 4/3],
  10 tries, then a centre crop) + horizontal flip, in ``loader.workers`` processes; JPEGs are
  decoded at a reduced DCT scale (``PIL.Image.draft``) whenever the crop stays >= S pixels, the
  analogue of TensorFlow's decode_and_crop_jpeg;
- per-record randomness from (seed, record position in the stream), so batches do not depend on
  the worker count, and the iterator state resumes exactly.
Evaluation: resize the shorter side to S / ``loader.eval_crop_ratio`` (256 for S = 224), centre
crop S, done as one crop-and-resize of the centred square of side ratio * min(H, W).
"""

import io
import math
import os
from typing import Iterator, Optional

from absl import flags
import grain.python as grain
import numpy as np
from PIL import Image

from lt_jax.data import split_lists
from lt_jax.data.split_lists import ImageRecords, SplitLists, load_split_lists

ASPECT_RANGE = (3 / 4, 4 / 3)
RRC_ATTEMPTS = 10
MAX_IN_MEMORY_BYTES = 4 << 30  # the in-memory path refuses larger decoded datasets


# --- image operations (pure, numpy + PIL) ----------------------------------------------------------

def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            min_area: float = 0.08,
                            ratio: tuple[float, float] = ASPECT_RANGE) -> tuple[int, int, int, int]:
  """(left, top, w, h) of torchvision's RandomResizedCrop.get_params on a width x height image."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(RRC_ATTEMPTS):
    target_area = area * rng.uniform(min_area, 1.0)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
  in_ratio = width / height
  if in_ratio < ratio[0]:
    w, h = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    w, h = int(round(height * ratio[1])), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, crop_ratio: float) -> tuple[int, int, int, int]:
  """(left, top, side, side): the centred square of side crop_ratio * min(width, height).

  Resizing it to S equals 'resize the shorter side to S / crop_ratio, centre crop S'.
  """
  side = max(1, int(round(crop_ratio * min(width, height))))
  return (width - side) // 2, (height - side) // 2, side, side


def full_box(width: int, height: int) -> tuple[int, int, int, int]:
  """The whole image (squashed to a square when resized, as the in-memory sources do)."""
  return 0, 0, width, height


def decode_crop_resize(data: bytes, box_fn, size: int) -> np.ndarray:
  """(size, size, 3) uint8: decode ``data``, crop ``box_fn(width, height)``, resize (bilinear).

  JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the crop >= size pixels
  on both sides. Grayscale, CMYK and palette images are converted to RGB.
  """
  try:
    image = Image.open(io.BytesIO(data))
  except Exception as e:  # pylint: disable=broad-except  (PIL raises several kinds)
    raise ValueError(f"cannot decode an image ({len(data)} bytes): {e}") from e
  with image:
    width, height = image.size
    left, top, w, h = box_fn(width, height)
    if image.format == "JPEG":
      image.draft("RGB", (-(-width * size // w), -(-height * size // h)))
    sx, sy = image.size[0] / width, image.size[1] / height
    image = image.convert("RGB")
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box), np.uint8)


# --- grain transforms ------------------------------------------------------------------------------

class TrainDecode(grain.RandomMapTransform):
  """Encoded record -> {'images': RRC + flip (S, S, 3) uint8, 'labels', 'ids'}."""

  def __init__(self, image_size: int, min_crop_area: float = 0.08, flip: bool = True):
    self.image_size, self.min_crop_area, self.flip = image_size, min_crop_area, flip

  def random_map(self, element, rng: np.random.Generator):
    box_fn = lambda w, h: random_resized_crop_box(rng, w, h, self.min_crop_area)
    image = _decode(element, box_fn, self.image_size)
    if self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    return {"images": np.ascontiguousarray(image), "labels": element["label"],
            "ids": element["id"]}


class EvalDecode(grain.MapTransform):
  """Encoded record -> {'images': centre crop (S, S, 3) uint8, 'labels', 'ids', 'mask'}."""

  def __init__(self, image_size: int, crop_ratio: float = 0.875):
    self.image_size, self.crop_ratio = image_size, crop_ratio

  def map(self, element):
    image = _decode(element, lambda w, h: center_crop_box(w, h, self.crop_ratio), self.image_size)
    return {"images": image, "labels": element["label"], "ids": element["id"], "mask": True}


def _decode(element, box_fn, size: int) -> np.ndarray:
  try:
    return decode_crop_resize(element["data"], box_fn, size)
  except ValueError as e:
    where = element.get("path", f"record {int(element['id'])}")
    raise ValueError(f"{where}: {e}; replace or remove the file (or its line in the list)") from e


# --- loaders ---------------------------------------------------------------------------------------

def host_shard(process_index: Optional[int], process_count: Optional[int]) -> tuple[int, int]:
  """(index, count) of this host: the arguments, else ``jax.process_index() / process_count()``."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in [0, {process_count})")
  return process_index, process_count


def local_batch_size(global_batch_size: int, process_count: int, field: str) -> int:
  """The per-host batch; ValueError naming ``field`` when it does not divide evenly."""
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"{field}={global_batch_size} must be a positive multiple of the "
                     f"{process_count} hosts")
  return global_batch_size // process_count


def available_cpus() -> int:
  """The CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where the
  platform has no affinity)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0)) or 1
  return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
  """``loader.workers``: -1 = one per CPU core this process may run on (its affinity: a SLURM
  task's ``--cpus-per-task``, not the node's cores), 0 = decode in the calling process.

  Worker processes read grain's absl flags; outside an absl app (tests, notebooks) the flags are
  marked parsed with their defaults first.
  """
  if workers < -1:
    raise ValueError(f"loader.workers={workers} must be >= -1 (-1 = one per CPU core)")
  workers = available_cpus() if workers == -1 else workers
  if workers and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return workers


class TrainLoader:
  """Endless iterator of host-local training batches with a resumable state.

  ``steps_per_epoch`` = ceil(N / global batch): the step count of one pass over the training
  set; batches run on across epoch boundaries (an epoch is a step count, as in ``train.py``).
  """

  def __init__(self, records: ImageRecords, *, global_batch_size: int, image_size: int, seed: int,
               min_crop_area: float = 0.08, flip: bool = True, workers: int = 0,
               prefetch: int = 2, process_index: Optional[int] = None,
               process_count: Optional[int] = None, num_epochs: Optional[int] = None):
    index, count = host_shard(process_index, process_count)
    self.batch_size = local_batch_size(global_batch_size, count, "train.batch_size")
    if len(records) < count:
      raise ValueError(f"{records.what} has {len(records)} images for {count} hosts")
    self.records = records
    self.steps_per_epoch = -(-len(records) // global_batch_size)
    sampler = grain.IndexSampler(
        num_records=len(records), shuffle=True, seed=int(seed) % 2**32, num_epochs=num_epochs,
        shard_options=grain.ShardOptions(index, count, drop_remainder=True))
    self.loader = grain.DataLoader(
        data_source=records.source, sampler=sampler,
        operations=[TrainDecode(image_size, min_crop_area, flip),
                    grain.Batch(self.batch_size, drop_remainder=True)],
        worker_count=resolve_workers(workers), worker_buffer_size=max(1, prefetch),
        read_options=grain.ReadOptions(num_threads=8, prefetch_buffer_size=4 * self.batch_size))
    self._iterator = iter(self.loader)

  def __iter__(self) -> "TrainLoader":
    return self

  def __next__(self) -> dict:
    return next(self._iterator)

  def get_state(self) -> bytes:
    """The iterator position (JSON bytes); save it with the checkpoint of the same step."""
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    """Continues exactly after the batch at which ``state`` was taken."""
    self._iterator.set_state(state)


def eval_batches(records: ImageRecords, *, global_batch_size: int, image_size: int,
                 crop_ratio: float = 0.875, workers: int = 0,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> Iterator[dict]:
  """One pass over this host's share of ``records`` in fixed-shape batches with a ``mask``.

  Every host yields the same number of batches (all-padding ones where its share is shorter), so
  collective evaluation steps line up; padded rows have mask False, label 0 and id -1.
  """
  index, count = host_shard(process_index, process_count)
  batch = local_batch_size(global_batch_size, count, "train.eval_batch_size")
  num_batches = -(-(-(-len(records) // count)) // batch)
  sampler = grain.IndexSampler(num_records=len(records), shuffle=False, num_epochs=1,
                               shard_options=grain.ShardOptions(index, count, drop_remainder=False))
  loader = grain.DataLoader(data_source=records.source, sampler=sampler,
                            operations=[EvalDecode(image_size, crop_ratio),
                                        grain.Batch(batch, drop_remainder=False)],
                            worker_count=resolve_workers(workers))
  produced = 0
  for produced, item in enumerate(loader, start=1):
    yield pad_batch(item, batch)
  empty = {"images": np.zeros((batch, image_size, image_size, 3), np.uint8),
           "labels": np.zeros((batch,), np.int32), "ids": np.full((batch,), -1, np.int64),
           "mask": np.zeros((batch,), bool)}
  for _ in range(num_batches - produced):
    yield empty


def pad_batch(item: dict, batch: int) -> dict:
  """A short final batch padded to ``batch`` rows (mask False, id -1)."""
  n = len(item["labels"])
  if n == batch:
    return item
  pad = {"images": 0, "labels": 0, "ids": -1, "mask": False}
  return {k: np.concatenate([v, np.full((batch - n, *v.shape[1:]), pad[k], v.dtype)])
          for k, v in item.items()}


def make_train_loader(config, records: ImageRecords, *, seed_offset: int = 0,
                      batch_size: Optional[int] = None, process_index: Optional[int] = None,
                      process_count: Optional[int] = None) -> TrainLoader:
  """The training loader of ``config`` (train.batch_size, dataset.image_size, seed, loader.*).

  A meta loader is the same over the meta records with ``batch_size=meta.batch_size`` and a
  ``seed_offset`` (e.g. 1).
  """
  loader_config = config.get("loader", {})
  return TrainLoader(
      records, global_batch_size=batch_size or config.train.batch_size,
      image_size=config.dataset.image_size or 224, seed=config.seed + seed_offset,
      min_crop_area=loader_config.get("min_crop_area", 0.08),
      flip=bool(config.augment.flip), workers=loader_config.get("workers", -1),
      prefetch=loader_config.get("prefetch", 2), process_index=process_index,
      process_count=process_count)


def make_eval_loader(config, records: ImageRecords, *, process_index: Optional[int] = None,
                     process_count: Optional[int] = None) -> Iterator[dict]:
  """One evaluation pass over ``records`` (train.eval_batch_size, loader.eval_crop_ratio)."""
  loader_config = config.get("loader", {})
  return eval_batches(records, global_batch_size=config.train.eval_batch_size,
                      image_size=config.dataset.image_size or 224,
                      crop_ratio=loader_config.get("eval_crop_ratio", 0.875),
                      workers=loader_config.get("workers", -1), process_index=process_index,
                      process_count=process_count)


# --- chosen records (phase II of two-phase methods) -------------------------------------------------

class IdDecoder:
  """uint8 (B, S, S, 3) images of the record ids a phase-II head chose, decoded as the loaders do:
  ``TrainDecode`` (random-resized-crop + flip) when ``augment``, else ``EvalDecode``'s centre crop.

  The randomness of image i of a batch is ``np.random.default_rng((seed, step, i))``, so a resumed
  run decodes the same crops; ``workers`` threads decode a batch (PIL releases the GIL).
  """

  def __init__(self, records: ImageRecords, *, image_size: int, seed: int, augment: bool,
               min_crop_area: float = 0.08, flip: bool = True, crop_ratio: float = 0.875,
               workers: int = 0):
    import concurrent.futures  # pylint: disable=g-import-not-at-top
    self.records, self.seed, self.augment = records, int(seed) % 2**32, augment
    self.train = TrainDecode(image_size, min_crop_area, flip)
    self.eval = EvalDecode(image_size, crop_ratio)
    workers = available_cpus() if workers == -1 else workers
    self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))

  def _one(self, record: int, step: int, position: int) -> np.ndarray:
    element = self.records.source[int(record)]
    if self.augment:
      rng = np.random.default_rng((self.seed, int(step), position))
      return self.train.random_map(element, rng)["images"]
    return self.eval.map(element)["images"]

  def __call__(self, ids, step: int) -> np.ndarray:
    """The images of ``ids`` (training-list positions) for phase-II step ``step``."""
    ids = np.asarray(ids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= len(self.records):
      raise ValueError(f"record ids must lie in [0, {len(self.records)}) of {self.records.what}")
    return np.stack(list(self.pool.map(self._one, ids, [step] * len(ids), range(len(ids)))))


def make_id_decoder(config, records: ImageRecords, *, augment: bool,
                    seed_offset: int = 0) -> IdDecoder:
  """The ``IdDecoder`` of ``config`` (dataset.image_size, seed, augment.flip, loader.*)."""
  loader_config = config.get("loader", {})
  return IdDecoder(records, image_size=config.dataset.image_size or 224,
                   seed=config.seed + seed_offset, augment=augment,
                   min_crop_area=loader_config.get("min_crop_area", 0.08),
                   flip=bool(config.augment.flip),
                   crop_ratio=loader_config.get("eval_crop_ratio", 0.875),
                   workers=loader_config.get("workers", -1))


# --- in-memory path (miniatures, small image sizes) ------------------------------------------------

def decode_all(records: ImageRecords, image_size: int) -> np.ndarray:
  """(N, S, S, 3) uint8: every image of ``records`` squashed to S x S (the in-memory sources' rule)."""
  if image_size < 1:
    raise ValueError(f"dataset.image_size={image_size} must be > 0 for a large-scale source: its "
                     "images differ in size")
  images = np.empty((len(records), image_size, image_size, 3), np.uint8)
  for i in range(len(records)):
    images[i] = _decode(records.source[i], full_box, image_size)
  return images


def load_source_data(dataset, opener=None) -> tuple[SplitLists, dict]:
  """(SplitLists, {'train_images', 'train_labels', 'val_images', 'val_labels', 'test_images',
  'test_labels'}) decoded at ``dataset.image_size``; val entries are None without a val list.

  Generates the miniature first when ``dataset.miniature`` names a format and ``dataset.path``
  does not exist yet (the ``:smoke`` configs).
  """
  if dataset.get("miniature") and not os.path.exists(dataset.path):
    from lt_jax.data import miniature  # pylint: disable=g-import-not-at-top
    miniature.write(dataset.miniature, dataset.path)
  splits = load_split_lists(dataset, opener)
  total = sum(len(r) for r in (splits.train, splits.val, splits.test) if r is not None)
  size = 3 * int(dataset.image_size)**2 * total
  if size > MAX_IN_MEMORY_BYTES:
    raise ValueError(
        f"decoding the {total:,} images of {dataset.name!r} at dataset.image_size="
        f"{dataset.image_size} would take {size / 2**30:.1f} GiB of host memory (limit "
        f"{MAX_IN_MEMORY_BYTES / 2**30:.0f} GiB): full-size runs stream: set "
        "loader.stream=True (docs/large_scale.md), or lower dataset.image_size to load "
        "it in memory")
  arrays = {}
  for split in split_lists.SPLITS:
    records = getattr(splits, split)
    arrays[f"{split}_images"] = None if records is None else decode_all(records, dataset.image_size)
    arrays[f"{split}_labels"] = None if records is None else records.labels
  return splits, arrays


__all__ = ["TrainLoader", "make_train_loader", "make_eval_loader", "IdDecoder", "make_id_decoder",
           "eval_batches", "random_resized_crop_box", "center_crop_box", "decode_crop_resize",
           "load_source_data"]
