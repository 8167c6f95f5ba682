"""Speed benchmark (lt-jax-bench, python -m lt_jax.bench).

usage: lt-jax-bench --config=NAME|FILE[:ARG] [--config.x=y] [--steps=N]

examples:
  lt-jax-bench --config=mfm_cifar:smoke                # tiny, on CPU
  lt-jax-bench --config=mfm_cifar --steps=100          # full size, on a GPU

Times the training epoch function of ``programs.py`` (sampling, on-device augmentation and the step,
under ``lax.scan``) on random uint8 images of the configured shape already on the device, for the
plain cross-entropy step and for the configured method. Prints JSON: compile seconds, ms per
iteration, images per second, peak device memory and the device kind. Runs tiny on CPU (add
``:smoke``) and at full size on a GPU.
"""

import json
import math
import time

from absl import flags
import jax
import numpy as np

from lt_jax import cli as cli_lib
from lt_jax import methods
from lt_jax import parallel
from lt_jax import programs
from lt_jax import train

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing stays side-effect free)."""
  flags.DEFINE_integer("steps", 50, "Iterations per timed call (one lax.scan).")
  flags.DEFINE_integer("repeats", 3, "Timed calls; the fastest is reported.")
  flags.DEFINE_string("image_shape", "32,32,3", "H,W,C of the synthetic images.")
  flags.DEFINE_integer("num_classes", 10, "Classes of the synthetic data.")


def synthetic_data(num_train: int, num_meta: int, num_classes: int, image_shape, seed: int = 0) -> dict:
  """Random uint8 images with balanced labels: the in-memory feed's device arrays."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in (("train", num_train), ("meta", num_meta)):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
    arrays[f"{split}_labels"] = (np.arange(n) % num_classes).astype(np.int32)
  return arrays


def time_method(config, arrays: dict, num_classes: int, repeats: int) -> dict:
  """Compile time and the fastest ms per iteration of ``config.method``'s epoch function.

  The epoch function is the training loop's own (shard_map over all devices, vmap over replicas).
  """
  method = methods.get_method(config.method)
  mesh = parallel.data_mesh()
  labels = arrays["train_labels"]
  ctx = train.build_context(config, class_counts=np.bincount(labels, minlength=num_classes),
                            train_labels=labels)
  meta_batch = (train.meta_batch_size(config, len(arrays["meta_labels"]), mesh.size)
                if method.needs_meta_data(config) else 0)
  image_shape = arrays["train_images"].shape[1:]
  state = parallel.replicate(train.init_replicas(config, ctx, method, image_shape), mesh)
  channels = image_shape[-1]
  steps_fn = programs.make_steps_fn(ctx, method, mesh, mean=np.full(channels, 0.5, np.float32),
                                    std=np.full(channels, 0.25, np.float32), meta_batch=meta_batch)
  arrays = parallel.replicate(arrays, mesh)
  mode = method.mode(config.train.epochs - 1, ctx)  # the last epoch's mode: the meta steps if any
  plan = programs.call_plan(ctx)
  started = time.perf_counter()
  compiled = {n: steps_fn.lower(state, arrays, 0, mode, n).compile() for n in {n for _, n in plan}}
  compile_seconds = time.perf_counter() - started

  def epoch(state):
    for first, num_steps in plan:
      state, metrics = compiled[num_steps](state, arrays, first)
    return jax.block_until_ready((state, metrics))[0]

  state = epoch(state)  # warm-up
  best = math.inf
  for _ in range(repeats):
    started = time.perf_counter()
    state = epoch(state)
    best = min(best, time.perf_counter() - started)
  ms = 1000 * best / ctx.steps_per_epoch
  return {"method": config.method, "mode": mode, "replicas": config.replicas,
          "steps_per_jit_call": plan[0][1],
          "compute_dtype": config.model.dtype, "compile_seconds": round(compile_seconds, 2),
          "ms_per_iteration": round(ms, 3),
          "images_per_second": round(config.replicas * config.train.batch_size / (ms / 1000), 1)}


def benchmark(config, steps: int, repeats: int, image_shape, num_classes: int) -> dict:
  """Plain cross-entropy step and the configured method on synthetic data of the run's shape."""
  num_meta = max(config.meta.batch_size, num_classes)
  arrays = synthetic_data(steps * config.train.batch_size, num_meta, num_classes, image_shape)
  plain = config.copy_and_resolve_references()
  with plain.unlocked():
    plain.method, plain.loss.name, plain.loss.reweight = "erm", "ce", "none"
  results = {"plain": time_method(plain, arrays, num_classes, repeats)}
  if config.method != "erm":
    if config.meta.strategy == "none":
      with config.unlocked():
        config.meta.strategy = "meta"
    results["method"] = time_method(config, arrays, num_classes, repeats)
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return {
      "device_kind": device.device_kind, "platform": device.platform, "devices": jax.device_count(),
      "model": config.model.name, "batch_size": config.train.batch_size,
      "meta_batch_size": config.meta.batch_size, "steps_per_call": steps,
      "peak_memory_mb": round(stats["peak_bytes_in_use"] / 2**20, 1) if stats and "peak_bytes_in_use" in stats else None,
      "jax": jax.__version__, **results,
  }


def main(argv):
  del argv
  image_shape = tuple(int(s) for s in FLAGS.image_shape.split(","))
  print(json.dumps(benchmark(FLAGS.config, FLAGS.steps, FLAGS.repeats, image_shape, FLAGS.num_classes),
                   indent=1))


def cli(argv=None):
  """Console-script entry (``lt-jax-bench``)."""
  define_flags()
  cli_lib.run_with_config(main, __doc__, argv)


if __name__ == "__main__":
  cli()
