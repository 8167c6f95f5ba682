"""The one file layer: atomic writes (readers never see half a file), JSON reads that name the file,
and the lock that keeps one writer per workdir."""

import contextlib
import json
import os
import socket
import time

from absl import logging


def write_atomic(path: str, payload: bytes | str) -> str:
  """Writes ``payload`` to ``path`` through a temporary file in the same folder; returns ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb" if isinstance(payload, bytes) else "w") as f:
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
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing; expected {expected}")
  with open(path) as f:
    return json.load(f)


def append_json_line(path: str, record: dict) -> None:
  """Appends ``record`` as one JSON line to ``path`` (a log that readers take line by line)."""
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


LOCK_FILE = ".lock"
_held = set()  # lock files this process holds


def check_writable_dir(path: str, what: str = "workdir") -> None:
  """Raises NotADirectoryError / PermissionError naming ``path`` unless it is (or can be made) a
  writable directory."""
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


@contextlib.contextmanager
def lock(folder: str):
  """Holds ``folder/.lock`` (JSON: host, pid, started) while inside: one writer per folder.

  Raises FileExistsError naming the owner and the lock when another live process holds it; a
  lock left by a dead process of this host is taken over with a warning. Released on exit.
  """
  path = os.path.join(folder, LOCK_FILE)
  os.makedirs(folder, exist_ok=True)
  me = {"host": socket.gethostname(), "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
  while True:
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      break
    except FileExistsError:
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
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
  with os.fdopen(fd, "w") as f:
    json.dump(me, f)
  _held.add(path)
  try:
    yield path
  finally:
    _held.discard(path)
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
