"""The one file layer: every path lt_jax reads or writes (workdir, checkpoints' side files, metrics,
TensorBoard, summaries, plots, selection, modulator artifacts, config, lock, loader states, data_dir)
goes through these functions, which work on local paths and on ``gs://`` (and the other URLs
``etils.epath`` knows: ``s3://``, ``az://``; through fsspec, so ``gs://`` needs ``gcsfs`` or
TensorFlow installed) alike.

Atomic writes: on a local disk through a temporary file in the same folder and ``os.replace``
(readers never see half a file). On an object store a rename is a copy plus a delete, not atomic,
but an object becomes visible only when its upload completes, so a URL is written directly: readers
see the old object or the whole new one. Object stores cannot append either: ``append_json_line``
on a URL rewrites the object (linear in its size; the logs hold no C^2 payload).
"""

import contextlib
import json
import os
import socket
import time

from absl import logging
from etils import epath


def is_url(path) -> bool:
  """Whether ``path`` is a URL (``gs://b/x``) rather than a local path."""
  return "://" in os.fspath(path)


def join(*parts) -> str:
  """``parts`` joined with "/" (a URL stays a URL: ``gs://b/x`` + ``y`` = ``gs://b/x/y``)."""
  return os.fspath(epath.Path(*parts))


def resolve(path) -> str:
  """A local path made absolute (``~`` expanded); a URL unchanged."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def exists(path) -> bool:
  return epath.Path(path).exists()


def isdir(path) -> bool:
  return epath.Path(path).is_dir()


def makedirs(path) -> None:
  """``path`` and its parents (a no-op where they exist; object stores need no folders)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def listdir(path) -> list[str]:
  """The names in folder ``path`` ([] when it does not exist)."""
  folder = epath.Path(path)
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def remove(path) -> None:
  """Deletes file ``path`` if it is there."""
  epath.Path(path).unlink(missing_ok=True)


def open(path, mode: str = "r"):  # noqa: A001 - the file layer's open
  """``path`` opened through epath (``open(path, "wb")`` for matplotlib's ``savefig`` and friends)."""
  return epath.Path(path).open(mode)


def copy(source, target) -> None:
  """Copies file ``source`` over ``target`` (any of them a URL)."""
  epath.Path(source).copy(target, overwrite=True)


def move(source, target) -> None:
  """Renames file or folder ``source`` to ``target`` (on an object store: copies, then deletes)."""
  epath.Path(source).rename(target)


def write_atomic(path: str, payload: bytes | str) -> str:
  """Writes ``payload`` to ``path`` whole or not at all (see the module doc); returns ``path``."""
  mode = "wb" if isinstance(payload, bytes) else "w"
  makedirs(os.path.dirname(resolve(path)))
  if is_url(path):
    with open(path, mode) as f:
      f.write(payload)
    return path
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, mode) as f:
      f.write(payload)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_json_atomic(path: str, value) -> str:
  """``value`` as indented JSON at ``path``, atomically."""
  return write_atomic(path, json.dumps(value, indent=1))


def read_json(path: str, expected: str):
  """The JSON at ``path``; FileNotFoundError saying what was ``expected`` there when it is missing."""
  if not exists(path):
    raise FileNotFoundError(f"{path} is missing; expected {expected}")
  with open(path) as f:
    return json.load(f)


def append_json_line(path: str, record: dict) -> None:
  """Appends ``record`` as one JSON line to ``path`` (a log that readers take line by line); on a
  URL the object is rewritten with the line added."""
  line = json.dumps(record) + "\n"
  if is_url(path):
    old = ""
    if exists(path):
      with open(path) as f:
        old = f.read()
    write_atomic(path, old + line)
    return
  with open(path, "a") as f:
    f.write(line)


LOCK_FILE = ".lock"
_held = set()  # lock files this process holds


def check_writable_dir(path: str, what: str = "workdir") -> None:
  """Raises NotADirectoryError / PermissionError naming ``path`` unless it is (or can be made) a
  writable directory. On a URL only the first of them is checked (an object store has no modes)."""
  if is_url(path):
    if exists(path) and not isdir(path):
      raise NotADirectoryError(f"{what} {path} is a file; expected a directory (or a prefix where "
                               "one can be made)")
    return
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise NotADirectoryError(f"{what} {path}: {existing} is a file; expected a directory "
                             "(or a path where one can be made)")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(f"{what} {path}: {existing} is not writable by this user; expected a "
                          "directory lt_jax can write in")


def _alive(pid) -> bool:
  """Whether process ``pid`` of this host runs (unknown, so yes, when ``pid`` is no number)."""
  if not isinstance(pid, int):
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    pass
  return True


def _create(path: str, owner: dict) -> bool:
  """Writes the lock ``path`` holding ``owner`` unless it exists; whether it did.

  Local: an exclusive create (``O_EXCL``), atomic. A URL: epath has no create-if-absent, so this
  is a check then a write, best effort: it stops a second run started after the first one's lock
  was written, not two started in the same instant (use one launcher per workdir there)."""
  if is_url(path):
    if exists(path):
      return False
    write_json_atomic(path, owner)
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump(owner, f)
  return True


@contextlib.contextmanager
def lock(folder: str):
  """Holds ``folder/.lock`` (JSON: host, pid, started) while inside: one writer per folder.

  Raises FileExistsError naming the owner and the lock when another live process holds it; a
  lock left by a dead process of this host is taken over with a warning. Released on exit.
  On a bucket URL the lock is best effort (see ``_create``).
  """
  path = join(folder, LOCK_FILE)
  makedirs(folder)
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
  while not _create(path, me):
    try:
      owner = read_json(path, "a lock")
    except (OSError, ValueError):
      owner = {}
    host, pid = owner.get("host"), owner.get("pid")
    if host != me["host"] or (_alive(pid) and (pid != me["pid"] or path in _held)):
      elsewhere = host not in (None, me["host"])
      raise FileExistsError(
          f"{folder} is in use by process {pid or '?'} on host {host or '?'}"
          f"{' (another host: never taken over automatically)' if elsewhere else ''} since "
          f"{owner.get('started', '?')}; wait for it to end or, if it no longer runs, delete "
          f"{path}") from None
    logging.warning("taking over %s: its process %s on %s (since %s) no longer runs", path,
                    pid, host, owner.get("started"))
    remove(path)
  _held.add(path)
  try:
    yield path
  finally:
    _held.discard(path)
    remove(path)
