"""Classify a folder (or a list) of images with a trained workdir or an exported model.

  python -m lt_jax.predict --workdir=DIR --input=FOLDER_OR_LIST --output=OUT.csv [--top_k=5]
  python -m lt_jax.predict --model=EXPORT --input=... --output=OUT.jsonl

``--input`` is a folder, searched recursively for .jpg / .jpeg / .png files (hidden ones skipped),
or a text file with one image path a line (relative paths are relative to the list's folder).
Each image is prepared as the run's evaluation prepares test images (``export.Model.prepare``:
resized to the training resolution and channels, or the streamed runs' centre crop), the batches
run on the device in one fixed shape (the last one padded: one compile), and ``--output`` gets one
row per image: path, then the top-k classes (names) with their softmax probabilities; ``.csv``
(columns path, class_1, prob_1, ...) or ``.jsonl`` ({"path", "top": [{"class", "index",
"probability"}]}).
"""

import concurrent.futures
import csv
import io
import json
import os
import sys

from absl import app
from absl import flags
import numpy as np
import tqdm

from lt_jax import cli as cli_lib
from lt_jax import files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OUTPUT_SUFFIXES = (".csv", ".jsonl")


def list_images(source: str) -> list[str]:
  """The image paths of a folder (recursive, sorted) or of a list file (one path a line)."""
  if os.path.isdir(source):
    found = []
    for root, dirs, names in os.walk(source):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      found.extend(os.path.join(root, n) for n in sorted(names)
                   if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES))
    if not found:
      raise FileNotFoundError(f"--input={source}: no {'/'.join(IMAGE_SUFFIXES)} files in the "
                              "folder or its subfolders")
    return found
  if not os.path.isfile(source):
    raise FileNotFoundError(f"--input={source} does not exist; expected a folder of images or a "
                            "text file listing image paths")
  base = os.path.dirname(os.path.abspath(source))
  with open(source) as f:
    listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  if not listed:
    raise ValueError(f"--input={source} lists no image paths; expected one path a line")
  return [p if os.path.isabs(p) else os.path.join(base, p) for p in listed]


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices (N, k) by decreasing probability, their softmax probabilities (N, k))."""
  z = logits.astype(np.float64)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return order, np.take_along_axis(probs, order, -1)


def rows(paths, indices, probs, class_names) -> list[dict]:
  """One {'path', 'top': [{'class', 'index', 'probability'}]} per image."""
  return [{"path": path, "top": [{"class": class_names[i], "index": int(i), "probability": float(p)}
                                 for i, p in zip(idx, pr)]}
          for path, idx, pr in zip(paths, indices, probs)]


def format_rows(records: list[dict], suffix: str, k: int) -> str:
  """CSV (path, class_1, prob_1, ...) or JSONL text of ``rows``."""
  if suffix == ".jsonl":
    return "".join(json.dumps(r) + "\n" for r in records)
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["path"] + [f"{c}_{j}" for j in range(1, k + 1) for c in ("class", "prob")])
  for r in records:
    writer.writerow([r["path"]] + [v for t in r["top"] for v in (t["class"], f"{t['probability']:.6g}")])
  return out.getvalue()


def predict(model, paths: list[str], *, k: int = 5, batch_size: int = 64,
            progress: bool = True) -> list[dict]:
  """Top-``k`` rows of ``paths`` under ``model`` (``export.Model``), batches of ``batch_size`` on
  the device; each batch is prepared (in threads) while the device runs the previous one."""
  k = min(k, len(model.class_names))
  batch_size = max(1, min(batch_size, len(paths)))
  pending, records = None, []

  def collect(pending):
    batch_paths, logits = pending
    indices, probs = top_k(np.asarray(logits)[:len(batch_paths)], k)
    records.extend(rows(batch_paths, indices, probs, model.class_names))

  # PIL decodes and resizes without holding the GIL: a few threads prepare each batch
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    for start in tqdm.tqdm(range(0, len(paths), batch_size), unit="batch", disable=not progress,
                           dynamic_ncols=True):
      batch_paths = paths[start:start + batch_size]
      images = np.zeros((batch_size, *model.input_shape), np.uint8)  # padded: one shape, one compile
      images[:len(batch_paths)] = list(pool.map(model.prepare, batch_paths))
      logits = model.device_logits(images, batch_size)  # asynchronous
      if pending is not None:
        collect(pending)
      pending = (batch_paths, logits)
  collect(pending)
  return records


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    if bool(f.workdir) == bool(f.model):
      raise ValueError("give exactly one of --workdir (a trained run) and --model (an export)")
    suffix = os.path.splitext(f.output)[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
      raise ValueError(f"--output={f.output}: expected a file ending in {' or '.join(OUTPUT_SUFFIXES)}")
    if f.top_k < 1 or f.batch_size < 1:
      raise ValueError(f"--top_k={f.top_k} and --batch_size={f.batch_size} must be >= 1")
    paths = list_images(f.input)
    from lt_jax import evaluate  # pylint: disable=g-import-not-at-top  (JAX after the flags)
    from lt_jax import export  # pylint: disable=g-import-not-at-top
    evaluate.quiet_orbax()
    model = export.load(f.model) if f.model else export.from_workdir(f.workdir, f.epoch, f.replica)
    records = predict(model, paths, k=f.top_k, batch_size=f.batch_size)
    k = min(f.top_k, len(model.class_names))
    files.write_atomic(f.output, format_rows(records, suffix, k))
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {f.output}: {len(records)} images, top-{k} of {len(model.class_names)} classes")


def cli():
  """``lt-jax-predict``: the console-script entry point."""
  flags.DEFINE_string("workdir", None, "A trained run's directory (or give --model).")
  flags.DEFINE_string("model", None, "An exported model folder (lt_jax.export).")
  flags.DEFINE_string("input", None, "A folder of .jpg/.jpeg/.png images (recursive) or a text "
                      "file with one image path a line.")
  flags.DEFINE_string("output", None, "Result file: .csv or .jsonl.")
  flags.DEFINE_integer("top_k", 5, "Classes per image, by decreasing probability.")
  flags.DEFINE_integer("batch_size", 64, "Images per device call.")
  flags.DEFINE_integer("epoch", None, "With --workdir: the checkpoint (default: the latest).")
  flags.DEFINE_integer("replica", 0, "With --workdir: which replica of a replicas=R run.")
  flags.mark_flags_as_required(["input", "output"])
  cli_lib.run_command(main, __doc__)


if __name__ == "__main__":
  cli()
