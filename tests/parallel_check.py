"""Run by test_parallel.py in a subprocess with 8 simulated CPU devices; prints JSON.

For each method, one step on a global batch of 16 (+ 8 meta images) computed two ways:
(a) on one device, ``method.train_step`` on the whole batch (ctx.axis_name None);
(b) under ``shard_map`` on 8 devices, each with its 2 (+ 1 meta) samples and ctx.axis_name set.
LeNet has no BatchNorm, so per-device statistics play no part and (b) must equal (a): every
device-level loss is a share whose device mean is the global loss, gradients and meta-gradients
are averaged, and weights normalise over the global batch. Reports the largest absolute
difference of the new params, meta state and loss.

And the in-memory feed's batch: each of the 8 devices builds only its share
(``programs.device_batch``); the shares, concatenated, must equal the one-device global batch
bit for bit (ids, labels, augmented images, meta batch; with BBN's extra reversed batch).
"""

import dataclasses
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import step_setup, tiny_config  # pylint: disable=g-import-not-at-top
from configs import cbmeta_cifar, ce_cifar, l2rw_cifar, mfm_cifar, mwnet_cifar
from lt_jax import parallel
from lt_jax import programs
from configs import bbn_cifar
from jax.sharding import PartitionSpec

CASES = {
    "erm_cb_drw": (ce_cifar, {"loss.reweight": "cb"}, None),
    "l2rw": (l2rw_cifar, {}, None),
    "mwnet": (mwnet_cifar, {}, None),
    "cbmeta": (cbmeta_cifar, {}, "meta"),
    "mfm_network": (mfm_cifar, {"mfm.points": ("conv3", "fc1")}, "meta"),
    "mfm_per_sample": (mfm_cifar, {"mfm.points": ("fc1",), "mfm.generator": "per_sample"}, "meta"),
}


def max_difference(a, b) -> float:
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
  return max(leaves) if leaves else 0.0


def compare(config_module, fields, phase) -> dict:
  config = tiny_config(config_module, **{"model.name": "lenet", "dataset.image_size": 28, **fields})
  ctx, method, state, batch = step_setup(config, image_shape=(28, 28, 1), batch_size=16, meta_batch=8)
  single, single_metrics = jax.jit(lambda s, b: method.train_step(s, b, ctx, phase))(state, batch)

  mesh = parallel.data_mesh()
  sharded_ctx = dataclasses.replace(ctx, axis_name=parallel.AXIS)

  def per_device(s, b):
    new_state, metrics = method.train_step(s, parallel.local_batch(b, parallel.AXIS), sharded_ctx, phase)
    return new_state, jax.lax.pmean(metrics["loss"], parallel.AXIS)

  multi, multi_loss = jax.jit(parallel.data_parallel(per_device, mesh))(
      parallel.replicate(state, mesh), parallel.replicate(batch, mesh))
  return {"devices": mesh.size, "params": max_difference(single.params, multi.params),
          "meta": max_difference(single.hparams, multi.hparams),
          "loss": abs(float(single_metrics["loss"]) - float(multi_loss)),
          "param_change": max_difference(single.params, state.params)}


def compare_batches() -> dict:
  """Largest difference between the 8 devices' concatenated shares and the global batch."""
  config = tiny_config(bbn_cifar, **{"model.name": "lenet", "dataset.image_size": 28})
  config.augment.pad = 2
  ctx, method, _, _ = step_setup(config, image_shape=(28, 28, 1), batch_size=16)
  rng = np.random.default_rng(0)
  arrays = {"train_images": rng.integers(0, 256, (ctx.num_train, 28, 28, 1), dtype=np.uint8),
            "train_labels": np.asarray(ctx.train_labels, np.int32),
            "meta_images": rng.integers(0, 256, (12, 28, 28, 1), dtype=np.uint8),
            "meta_labels": np.arange(12, dtype=np.int32) % 4}
  order = jax.random.permutation(jax.random.key(3), ctx.num_train)

  def batch(ctx, arrays, order):
    return programs.device_batch(jax.random.key(7), arrays, order, 1, ctx=ctx, method=method,
                                 mean=0.5, std=0.25, meta_batch=8)

  single = jax.jit(lambda a, o: batch(ctx, a, o))(arrays, order)
  mesh = parallel.data_mesh()
  sharded_ctx = dataclasses.replace(ctx, axis_name=parallel.AXIS)
  shares = jax.jit(jax.shard_map(lambda a, o: batch(sharded_ctx, a, o), mesh=mesh,
                                 in_specs=PartitionSpec(), out_specs=PartitionSpec(parallel.AXIS),
                                 check_vma=False))(arrays, order)
  return {"keys": sorted(single), "batch": max_difference(single, shares),
          "images_vary": float(np.std(np.asarray(single["images"])))}


if __name__ == "__main__":
  report = {name: compare(*case) for name, case in CASES.items()}
  print(json.dumps({**report, "device_batch": compare_batches()}))
