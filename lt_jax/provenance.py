"""What produced a run: lt_jax version and git commit, Python, JAX and the devices. Recorded in
``config.json`` and ``summary.json`` under ``"provenance"`` (not a config field, so the re-run check
never compares it)."""

import functools
import pathlib
import platform
import subprocess

import jax

import lt_jax

KEY = "provenance"


def _git(root: pathlib.Path, *args: str) -> str | None:
  try:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=5, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


@functools.lru_cache(maxsize=4)
def git_state(root: pathlib.Path = pathlib.Path(lt_jax.__file__).resolve().parent.parent
              ) -> tuple[str | None, bool | None]:
  """(HEAD commit, whether tracked files differ from it) of the git checkout lt_jax runs from
  (``root``); (None, None) for an installed lt_jax, without git, or on any error."""
  if not (root / ".git").exists():  # only the source tree itself, never an enclosing repository
    return None, None
  commit = _git(root, "rev-parse", "HEAD") or None
  status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
  return commit, None if status is None else bool(status)


def record() -> dict:
  """{lt_jax, git_commit, git_dirty, python, jax, jaxlib, backend, devices: {kind, count,
  local_count, process_count}} of this process."""
  devices = jax.devices()
  commit, dirty = git_state()
  return {
      "lt_jax": lt_jax.__version__,
      "git_commit": commit,
      "git_dirty": dirty,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": _jaxlib_version(),
      "backend": jax.default_backend(),
      "devices": {"kind": devices[0].device_kind, "count": len(devices),
                  "local_count": jax.local_device_count(), "process_count": jax.process_count()},
  }


def config_record(config) -> dict:
  """``config.json``'s content: the config's fields and the provenance."""
  return {**config.to_dict(), KEY: record()}


def _jaxlib_version() -> str | None:
  try:
    import jaxlib  # pylint: disable=g-import-not-at-top
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None
