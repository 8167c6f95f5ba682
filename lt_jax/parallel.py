"""Data parallelism over a 1-D ``data`` mesh of every device (all hosts), with ``jax.shard_map``.

The programming model of ``jax.pmap`` (which JAX now builds on ``jit(shard_map)``): each device
runs the same step on its 1/D share of the global batch, gradients and meta-gradients are averaged
with ``lax.pmean`` (``train_state.device_mean``), BatchNorm normalises with per-device batch
statistics as in the papers' single-GPU runs. State and the uint8 training arrays are replicated;
every device draws the same global batch ids and augmentation from the step key, then gathers and
augments only its own slice (``programs.device_batch``), so the training trajectory does not
depend on the device count except through BatchNorm's batch statistics (none for BatchNorm-free
models).

Multi-host: after ``jax.distributed.initialize()`` every process loads the same (small, seeded)
long-tailed arrays, ``replicate`` places them on the global mesh, and each device reads only its
slice of each batch.
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

AXIS = "data"


def data_mesh() -> Mesh:
  """The 1-D mesh ``data`` over ``jax.devices()`` (every device of every process)."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicate(tree, mesh: Mesh):
  """``tree`` placed whole on every device of ``mesh``."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_leading(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array split over the devices along axis 0 (zero-padded to a multiple of D).

  Every process holds the whole array; each device gets its block.
  """
  array = np.asarray(array)
  padded = -(-array.shape[0] // mesh.size) * mesh.size
  array = np.pad(array, [(0, padded - array.shape[0])] + [(0, 0)] * (array.ndim - 1))
  sharding = NamedSharding(mesh, PartitionSpec(AXIS))
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def local_slice(x: jax.Array, axis_name: str | None) -> jax.Array:
  """This device's 1/D block of the leading axis of a global-batch array (all of it on one device)."""
  if not axis_name:
    return x
  size = x.shape[0] // jax.lax.axis_size(axis_name)
  return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis_name) * size, size)


def local_batch(batch: dict, axis_name: str | None) -> dict:
  """This device's slice of every entry of a global batch."""
  return {k: local_slice(v, axis_name) for k, v in batch.items()}


def per_device(global_size: int, devices: int, field: str) -> int:
  """global_size / D, or a ValueError naming ``field`` when D does not divide it."""
  if global_size % devices:
    raise ValueError(f"{field}={global_size} must be divisible by the {devices} devices of the "
                     f"data-parallel mesh (each device takes an equal share)")
  return global_size // devices


def data_parallel(fn, mesh: Mesh):
  """``fn`` (replicated inputs -> replicated outputs) run per device under ``jax.shard_map``."""
  spec = PartitionSpec()
  return jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
