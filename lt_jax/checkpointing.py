"""Orbax checkpoints of the TrainState (and a streamed run's loader positions): atomic saves, resume.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and the half-written one is ignored on restart.
A streamed run's grain loaders save their positions beside each checkpoint
(``workdir/loader_state/process{i}_{name}_epoch{e}.bin``, one per host, written atomically before
the checkpoint that points at them), so a resumed run sees the same batches as an uninterrupted one.

A streamed epoch stopped by a signal between steps is saved by ``save_in_epoch``: the state under
its global step in ``workdir/checkpoint_in_epoch`` (one kept), beside it per host
``loader_state/process{i}_in_epoch_step{s}.json`` (epoch, steps done, the epoch's running metric
sums, the loaders' positions), written first. ``restore_in_epoch`` takes it up when it is newer
than the latest epoch checkpoint; the next epoch checkpoint deletes it.

A committed checkpoint damaged later (a truncated or deleted array file, unreadable metadata, an
empty step folder) is not trusted blindly: ``restore_latest`` logs a warning naming the step's
folder and what failed, and falls back to the checkpoint before it (and the one before that, ...).
When one reads, the damaged newer ones are moved aside to ``checkpoints/<step>.damaged`` (never
deleted; orbax ignores the name), so the next save of that step does not collide with them; a
read-only manager (evaluation, a given phase-I run) leaves them in place. When none reads, the
run fails with one line naming the checkpoints folder (``DamagedCheckpointError``).
"""

import os
import re

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from lt_jax import files

LOADER_DIR = "loader_state"
IN_EPOCH_DIR = "checkpoint_in_epoch"


def manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over ``workdir/checkpoints`` keeping the ``keep`` latest steps (or, with
  ``read_only``, restoring only). One unnamed item (the state), fixed here rather than guessed
  from the first step folder read, which a damaged (empty) folder would get wrong for all."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(files.join(files.resolve(workdir), "checkpoints"), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


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
    clear_in_epoch(_workdir(mngr))  # superseded by this epoch's checkpoint


class DamagedCheckpointError(ValueError):
  """No checkpoint in a workdir's ``checkpoints`` folder reads back."""


def restore_latest(mngr: ocp.CheckpointManager, state=None, loaders: dict | None = None):
  """(state, epoch) from the latest checkpoint that reads back (the ``loaders`` set to its saved
  positions), or (state, 0) when there is none.

  ``state`` is the freshly initialised state: it gives the structure, shapes and shardings; None
  gives the arrays as saved (``restore_arrays``). A checkpoint that fails to read is named in a
  warning and the one before it is tried; the damaged ones are then moved aside (see the module
  doc). DamagedCheckpointError when none reads.
  """
  failed = []
  for epoch in sorted(mngr.all_steps(), reverse=True):
    positions = _loader_positions(mngr, loaders, epoch)
    try:
      restored = restore_arrays(mngr, epoch) if state is None else restore(mngr, state, epoch)
    except Exception as e:  # noqa: BLE001 - orbax raises plain Exception, ValueError, OSError, ...
      failed.append((epoch, _reason(e)))
      logging.warning("the checkpoint %s does not read back (%s); trying the one before it",
                      _step_dir(mngr, epoch), failed[-1][1])
      continue
    for name, loader in (loaders or {}).items():
      loader.set_state(positions[name])
    if failed:
      _set_aside(mngr, [e for e, _ in failed], epoch)
    return restored, epoch
  if not failed:
    return state, 0
  raise DamagedCheckpointError(
      f"no checkpoint in {mngr.directory} reads back (epochs "
      f"{', '.join(str(e) for e, _ in failed)}; epoch {failed[0][0]}: {failed[0][1]}); to start "
      "over, run with a new --workdir (the damaged checkpoints are left as they are)")


def _loader_positions(mngr: ocp.CheckpointManager, loaders: dict | None, epoch: int) -> dict:
  """The ``loaders``' saved positions at ``epoch`` (bytes by name); FileNotFoundError naming a
  missing one."""
  positions = {}
  for name in loaders or {}:
    path = loader_state_path(_workdir(mngr), name, epoch)
    if not files.exists(path):
      raise FileNotFoundError(
          f"{path} is missing: the checkpoint of epoch {epoch} in {mngr.directory} has no {name} "
          f"loader state for process {jax.process_index()} (was it written by loader.stream=False "
          "or with another host count?); remove the checkpoints to restart")
    with files.open(path, "rb") as f:
      positions[name] = f.read()
  return positions


def _step_dir(mngr: ocp.CheckpointManager, epoch: int) -> str:
  return files.join(str(mngr.directory), str(epoch))


def _reason(error: BaseException) -> str:
  """``error`` in one line: its type and first line, and those of the error it was raised from."""
  parts = []
  while error is not None and len(parts) < 2:
    first = (str(error).strip().splitlines() or [""])[0]
    parts.append(f"{type(error).__name__}: {first[:300]}")
    error = error.__cause__ or error.__context__
  return "; from ".join(parts)


def _set_aside(mngr: ocp.CheckpointManager, epochs, restored: int) -> None:
  """Moves the damaged checkpoints of ``epochs`` to ``<epoch>.damaged`` (``.damaged.2``, ... if
  taken) and makes ``mngr`` forget them; a read-only manager leaves them (and says so)."""
  if mngr._options.read_only:  # pylint: disable=protected-access  (no public accessor)
    logging.warning("using the checkpoint of epoch %d; the damaged checkpoints of epochs %s "
                    "in %s are left in place (read only)", restored, epochs, mngr.directory)
    return
  if jax.process_index() == 0:
    for epoch in epochs:
      source, target = _step_dir(mngr, epoch), _step_dir(mngr, epoch) + ".damaged"
      n = 1
      while files.exists(target):
        n += 1
        target = f"{_step_dir(mngr, epoch)}.damaged.{n}"
      files.move(source, target)
      logging.warning("moved the damaged checkpoint %s aside to %s (not deleted); resuming from "
                      "the checkpoint of epoch %d", source, target, restored)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("lt_jax_damaged_checkpoints_set_aside")
  mngr.reload()


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


def _remove_positions(workdir: str, kind: str, keep) -> None:
  """Deletes this host's ``loader_state/process{i}_{kind}`` files whose number is not in ``keep``
  (``kind``: a regular expression with one group, the epoch or global step)."""
  folder, keep = files.join(workdir, LOADER_DIR), set(keep)
  pattern = re.compile(rf"process{jax.process_index()}_{kind}$")
  for name in files.listdir(folder):
    match = pattern.match(name)
    if match and int(match.group(1)) not in keep:
      files.remove(files.join(folder, name))


def prune_loader_states(workdir: str, keep_epochs) -> None:
  """Deletes this host's loader states of epochs whose checkpoint orbax has dropped."""
  _remove_positions(workdir, r"\w+?_epoch(\d+)\.bin", keep_epochs)


def _in_epoch_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(files.join(workdir, IN_EPOCH_DIR),
                               options=ocp.CheckpointManagerOptions(max_to_keep=1),
                               item_handlers=ocp.StandardCheckpointHandler())


def clear_in_epoch(workdir: str, keep: int | None = None) -> None:
  """Deletes the in-epoch checkpoints (all, or all but global step ``keep``) and this host's
  positions of them."""
  if files.exists(files.join(workdir, IN_EPOCH_DIR)):
    in_epoch = _in_epoch_manager(workdir)
    for step in in_epoch.all_steps():
      if step != keep:
        in_epoch.delete(step)
  _remove_positions(workdir, r"in_epoch_step(\d+)\.json", () if keep is None else (keep,))


def _in_epoch_path(workdir: str, step: int) -> str:
  return files.join(workdir, LOADER_DIR, f"process{jax.process_index()}_in_epoch_step{step}.json")


def save_in_epoch(mngr: ocp.CheckpointManager, state, *, epoch: int, steps_done: int, totals: dict,
                  loaders: dict) -> int:
  """Saves a streamed epoch stopped after ``steps_done`` of its steps: ``state`` under its global
  step, the position (``epoch`` = epochs finished before it, ``steps_done``, the metric sums
  ``totals``) and the ``loaders``' positions; returns the checkpoint's folder."""
  workdir, step = _workdir(mngr), int(jax.device_get(state.step))
  position = {"epoch": epoch, "steps_done": steps_done,
              "totals": {k: [np.asarray(v).item(), str(np.asarray(v).dtype)]
                         for k, v in jax.device_get(totals).items()},
              "loaders": {name: _text(loader.get_state()) for name, loader in loaders.items()}}
  files.write_json_atomic(_in_epoch_path(workdir, step), position)
  in_epoch = _in_epoch_manager(workdir)
  in_epoch.save(step, args=ocp.args.StandardSave(state), force=True)
  in_epoch.wait_until_finished()
  clear_in_epoch(workdir, keep=step)
  return files.join(workdir, IN_EPOCH_DIR, str(step))


def restore_in_epoch(mngr: ocp.CheckpointManager, state, loaders: dict, after_step: int):
  """(state, position) of the in-epoch checkpoint when it is newer than global step
  ``after_step`` (that of the latest epoch checkpoint), the ``loaders`` set to its positions and
  ``position['totals']`` as arrays; else None."""
  workdir = _workdir(mngr)
  if not files.exists(files.join(workdir, IN_EPOCH_DIR)):
    return None
  in_epoch = _in_epoch_manager(workdir)
  step = in_epoch.latest_step()
  if step is None or step <= after_step:
    return None
  position = files.read_json(_in_epoch_path(workdir, step),
                             f"the position of the in-epoch checkpoint of step {step}")
  for name, loader in loaders.items():
    loader.set_state(position["loaders"][name].encode())
  position["totals"] = {k: np.asarray(v, dtype) for k, (v, dtype) in position["totals"].items()}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return in_epoch.restore(step, args=ocp.args.StandardRestore(abstract)), position


def _text(position) -> str:
  return position.decode() if isinstance(position, bytes) else str(position)
