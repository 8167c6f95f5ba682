"""The one file layer: atomic writes (readers never see half a file) and JSON reads that name the file."""

import json
import os


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
