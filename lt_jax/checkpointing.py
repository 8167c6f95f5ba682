"""Orbax checkpoints of the TrainState (and a streamed run's loader positions): atomic saves, resume.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and the half-written one is ignored on restart.
A streamed run's grain loaders save their positions beside each checkpoint
(``workdir/loader_state/process{i}_{name}_epoch{e}.bin``, one per host, written atomically before
the checkpoint that points at them), so a resumed run sees the same batches as an uninterrupted one.
"""

import os
import re

import jax
import orbax.checkpoint as ocp

from lt_jax import files

LOADER_DIR = "loader_state"


def manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over ``workdir/checkpoints`` keeping the ``keep`` latest steps (or, with
  ``read_only``, restoring only)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(files.join(files.resolve(workdir), "checkpoints"), options=options)


def _workdir(mngr: ocp.CheckpointManager) -> str:
  return os.path.dirname(str(mngr.directory))


def save(mngr: ocp.CheckpointManager, state, epoch: int, loaders: dict | None = None) -> None:
  """Saves ``state`` (and the ``loaders``' positions) under its epoch number; waits for the commit."""
  if loaders:
    for name, loader in loaders.items():
      position = loader.get_state()
      files.write_atomic(loader_state_path(_workdir(mngr), name, epoch),
                         position if isinstance(position, bytes) else str(position).encode())
  mngr.save(epoch, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()
  if loaders:
    prune_loader_states(_workdir(mngr), mngr.all_steps())


def restore_latest(mngr: ocp.CheckpointManager, state, loaders: dict | None = None):
  """(state, epoch) from the latest checkpoint (the ``loaders`` set to their saved positions), or
  (state, 0) when there is none.

  ``state`` is the freshly initialised state: it gives the structure, shapes and shardings.
  """
  epoch = mngr.latest_step()
  if epoch is None:
    return state, 0
  for name, loader in (loaders or {}).items():
    path = loader_state_path(_workdir(mngr), name, epoch)
    if not files.exists(path):
      raise FileNotFoundError(
          f"{path} is missing: the checkpoint of epoch {epoch} in {mngr.directory} has no {name} "
          f"loader state for process {jax.process_index()} (was it written by loader.stream=False "
          "or with another host count?); remove the checkpoints to restart")
    with files.open(path, "rb") as f:
      loader.set_state(f.read())
  return restore(mngr, state, epoch), epoch


def restore(mngr: ocp.CheckpointManager, state, epoch: int):
  """The checkpoint of ``epoch``, shaped and sharded like ``state``; ValueError listing the saved
  epochs when there is none."""
  if epoch not in mngr.all_steps():
    raise ValueError(f"{mngr.directory} has no checkpoint of epoch {epoch}; saved epochs: "
                     f"{sorted(mngr.all_steps()) or 'none'}")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))


def restore_arrays(mngr: ocp.CheckpointManager, epoch: int) -> dict:
  """The checkpoint of ``epoch`` as saved ({'params': ..., 'batch_stats': ..., ...}), without a
  target state: for reading a run whose state layout is not rebuilt (a phase-II head's)."""
  return mngr.restore(epoch, args=ocp.args.StandardRestore())


def loader_state_path(workdir: str, name: str, epoch: int, process: int | None = None) -> str:
  """``workdir/loader_state/process{i}_{name}_epoch{e}.bin``."""
  process = jax.process_index() if process is None else process
  return files.join(workdir, LOADER_DIR, f"process{process}_{name}_epoch{epoch}.bin")


def prune_loader_states(workdir: str, keep_epochs) -> None:
  """Deletes this host's loader states of epochs whose checkpoint orbax has dropped."""
  folder = files.join(workdir, LOADER_DIR)
  pattern = re.compile(rf"process{jax.process_index()}_\w+?_epoch(\d+)\.bin$")
  for name in files.listdir(folder):
    match = pattern.match(name)
    if match and int(match.group(1)) not in set(keep_epochs):
      files.remove(files.join(folder, name))
