"""Images per second of the streaming 224-px pipeline on generated ImageNet-sized JPEGs.

  python -m lt_jax.data.loader_bench [--images=512] [--workers=0,1,2] [--batch=64] [--size=224]

Writes ``--images`` JPEGs of ``--width`` x ``--height`` pixels (default 500 x 375, ImageNet's
typical size; smooth random content at quality 90, ~50 kB each) to a temporary folder, then times ``grain_loader.TrainLoader``
(decode + random-resized-crop + flip), the evaluation loader (decode + centre crop) and phase II's
``grain_loader.IdDecoder`` (the same crop + flip of random ids, in max(1, workers) threads) for each
worker count, after one warm-up batch. Prints one JSON line per measurement.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from lt_jax.data import grain_loader
from lt_jax.data import miniature
from lt_jax.data import split_lists

_IMAGES = flags.DEFINE_integer("images", 512, "Generated JPEGs.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker counts to time.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_SIZE = flags.DEFINE_integer("size", 224, "Output image size S.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per measurement.")
_WIDTH = flags.DEFINE_integer("width", 500, "Width of the generated JPEGs.")
_HEIGHT = flags.DEFINE_integer("height", 375, "Height of the generated JPEGs.")


def time_batches(iterator, batches: int, batch_size: int) -> float:
  """Images per second over ``batches`` batches after one warm-up batch."""
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as folder:
    paths = miniature.write_jpegs(folder, _IMAGES.value, _WIDTH.value, _HEIGHT.value)
    labels = np.zeros(len(paths), np.int32)
    records = split_lists.ImageRecords(labels, split_lists.FileSource(folder, paths, labels),
                                       "generated")
    mean_bytes = np.mean([os.path.getsize(os.path.join(folder, p)) for p in paths])
    for workers in map(int, _WORKERS.value):
      loader = grain_loader.TrainLoader(records, global_batch_size=_BATCH.value,
                                       image_size=_SIZE.value, seed=0, workers=workers,
                                       process_index=0, process_count=1)
      rate = time_batches(loader, _BATCHES.value, _BATCH.value)
      print(json.dumps({"loader": "train", "workers": workers, "images_per_s": round(rate, 1),
                        "cpus": os.cpu_count(), "jpeg_kb": round(mean_bytes / 1024, 1),
                        "jpeg_size": [_WIDTH.value, _HEIGHT.value], "load_avg": os.getloadavg()[0],
                        "size": _SIZE.value, "batch": _BATCH.value}), flush=True)
      del loader
    for workers in map(int, _WORKERS.value):
      decoder = grain_loader.IdDecoder(records, image_size=_SIZE.value, seed=0, augment=True,
                                       workers=workers)
      ids = np.random.default_rng(0).integers(0, len(records), (_BATCHES.value + 1, _BATCH.value))
      rate = time_batches((decoder(i, step) for step, i in enumerate(ids)), _BATCHES.value,
                          _BATCH.value)
      print(json.dumps({"loader": "phase2_ids", "threads": max(1, workers),
                        "images_per_s": round(rate, 1), "cpus": os.cpu_count(),
                        "load_avg": os.getloadavg()[0]}), flush=True)
    for workers in map(int, _WORKERS.value):
      start = time.perf_counter()
      count = sum(int(b["mask"].sum()) for b in grain_loader.eval_batches(
          records, global_batch_size=_BATCH.value, image_size=_SIZE.value, workers=workers,
          process_index=0, process_count=1))
      rate = count / (time.perf_counter() - start)
      print(json.dumps({"loader": "eval", "workers": workers, "images_per_s": round(rate, 1),
                        "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  app.run(main)
