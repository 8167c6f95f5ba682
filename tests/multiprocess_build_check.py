"""Manual check (not collected by pytest): one folder-dataset build in a real multi-process job.

  python tests/multiprocess_build_check.py [PROCESSES]      # default 3; prints JSON, exit 0 = ok

Starts PROCESSES local CPU processes joined by ``jax.distributed`` (a local coordinator), each
calling ``folder_builder.prepare`` on the same tiny image folder and the same empty ``data_dir``
at once, as the processes of a first multi-host run do. Each process records whether it ran the
TFDS build (slowed by 3 s, all processes released at once); expected: only process 0 did, and
every process returns the same prepared dir. Without the process-0 guard every process builds.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def child(index: int, count: int, port: int, root: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")
  jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=index)
  from lt_jax.data import folder_builder  # pylint: disable=g-import-not-at-top
  built = []
  original = folder_builder.ImageFolderBuilder.download_and_prepare

  def recording(self, *args, **kwargs):  # slow, so that unguarded builds would overlap
    built.append(index)
    time.sleep(3)
    return original(self, *args, **kwargs)

  folder_builder.ImageFolderBuilder.download_and_prepare = recording
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.sync_global_devices("start")  # every process asks for the data at once
  target = folder_builder.prepare(os.path.join(root, "images"), data_dir=os.path.join(root, "tfds"))
  print(json.dumps({"process": index, "built": bool(built), "target": target}), flush=True)


def main(count: int) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp(prefix="lt_jax_build_check")
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for cls in ("ant", "bee"):
      os.makedirs(os.path.join(root, "images", split, cls))
      for i in range(4):
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(
            os.path.join(root, "images", split, cls, f"{i}.png"))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  procs = [subprocess.Popen([sys.executable, __file__, "--child", str(i), str(count), str(port),
                             root], stdout=subprocess.PIPE, text=True, env=env)
           for i in range(count)]
  outputs = [p.communicate(timeout=300)[0].strip().splitlines() for p in procs]
  results = [json.loads(out[-1]) if p.returncode == 0 and out else {"exit status": p.returncode}
             for p, out in zip(procs, outputs)]
  ok = (all(p.returncode == 0 for p in procs)
        and [r["built"] for r in results] == [True] + [False] * (count - 1)
        and len({r["target"] for r in results}) == 1)
  print(json.dumps({"ok": ok, "results": results}))
  return 0 if ok else 1


if __name__ == "__main__":
  if sys.argv[1:2] == ["--child"]:
    child(*map(int, sys.argv[2:5]), sys.argv[5])
  else:
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
