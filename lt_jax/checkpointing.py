"""Orbax checkpoints of the TrainState: atomic saves, resume from the latest.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and the half-written one is ignored on restart.
"""

import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager over ``workdir/checkpoints`` keeping the ``keep`` latest steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def save(mngr: ocp.CheckpointManager, state, epoch: int) -> None:
  """Saves ``state`` under its epoch number and waits until it is committed."""
  mngr.save(epoch, args=ocp.args.StandardSave(state))
  mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, state):
  """(state, epoch) from the latest checkpoint, or (state, 0) when there is none.

  ``state`` is the freshly initialised state: it gives the structure, shapes and shardings.
  """
  epoch = mngr.latest_step()
  if epoch is None:
    return state, 0
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return mngr.restore(epoch, args=ocp.args.StandardRestore(abstract)), epoch
