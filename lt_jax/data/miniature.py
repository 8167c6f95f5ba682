"""Tiny datasets in the published large-scale formats, with real small JPEGs, for tests and smoke runs.

  python -m lt_jax.data.miniature FORMAT DIR      FORMAT in imagenet_lt, places_lt, inat2017,
                                                  inat2018, folder, mit67

Writes DIR/<images> and the split files / annotation JSON named as the real datasets name them
(``LISTS[FORMAT]``). Classes follow a long tail that crosses the many / medium / few thresholds
(> 100, 20-100, < 20 training images); every image is a 40-80 px JPEG of a class colour plus a
gradient and noise, so a small network can learn it. Deterministic: the same bytes every time.
``mit67`` is MIT-67's layout (``Images/<class>/*.jpg``, every image, no split) with its 60/40
lists then written by ``split_lists.write_mit67_split``, as a user does with ``lt_jax.data.mit67``.
"""

import json
import os
import sys

import numpy as np
from PIL import Image

from lt_jax.data import split_lists

# format -> training images per class (head first), val and test images per class
SPECS = {
    "imagenet_lt": dict(train=(120, 60, 30, 20, 19, 10, 6, 5), val=20, test=10),
    "places_lt": dict(train=(110, 40, 20, 12, 6, 5), val=12, test=10),
    "inat2017": dict(train=(104, 40, 21, 9, 6, 5, 5), val=5, test=5),
    "inat2018": dict(train=(102, 30, 12, 6, 4, 3, 2), val=3, test=3),
    "folder": dict(train=(30, 15, 8, 4), val=0, test=5),
    "mit67": dict(images=(30, 18, 11, 7, 5)),  # all images per class; 60/40 split written after
}
LISTS = {
    "imagenet_lt": dict(train="ImageNet_LT_train.txt", val="ImageNet_LT_val.txt",
                        test="ImageNet_LT_test.txt"),
    "places_lt": dict(train="Places_LT_train.txt", val="Places_LT_val.txt",
                      test="Places_LT_test.txt"),
    "inat2017": dict(train="train2017.json", val="", test="val2017.json"),
    "inat2018": dict(train="train2018.json", val="", test="val2018.json"),
    "folder": dict(train="TrainImages.txt", val="", test="TestImages.txt"),
    "mit67": dict(train=split_lists.MIT67_LISTS[0], val="", test=split_lists.MIT67_LISTS[1]),
}
SOURCE = {"imagenet_lt": "split_file", "places_lt": "split_file", "inat2017": "inat_json",
          "inat2018": "inat_json", "folder": "split_file", "mit67": "split_file"}
FORMATS = tuple(SPECS)


def synthetic_image(rng: np.random.Generator, label: int, num_classes: int) -> Image.Image:
  """A 40-80 px RGB image: the class's hue, a random gradient and pixel noise."""
  height, width = rng.integers(40, 81, size=2)
  hue = label / num_classes
  base = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 90 + 128
  y, x = np.mgrid[0:height, 0:width]
  direction = rng.normal(size=2)
  gradient = (direction[0] * y / height + direction[1] * x / width)[..., None] * 40
  pixels = base + gradient + rng.normal(0, 12, size=(height, width, 3))
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_jpegs(folder: str, count: int, width: int = 500, height: int = 375,
                seed: int = 0) -> list[str]:
  """``count`` smooth random RGB JPEGs of width x height at quality 90 (photo-like sizes, ~50 kB
  at 500 x 375) named img_00000.jpg...; returns their names. Used by ``loader_bench``."""
  rng = np.random.default_rng(seed)
  names = []
  for i in range(count):
    small = rng.integers(0, 256, size=(max(1, height // 25), max(1, width // 25), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 6, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    names.append(f"img_{i:05d}.jpg")
    Image.fromarray(pixels).save(os.path.join(folder, names[-1]), quality=90)
  return names


def _save(root: str, rel: str, image: Image.Image) -> None:
  path = os.path.join(root, rel.lstrip("/"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, format="JPEG", quality=90)


def _split_items(spec: dict) -> dict[str, list[int]]:
  """Per split, the label of each image in list order."""
  num_classes = len(spec["train"])
  return {
      "train": [c for c, n in enumerate(spec["train"]) for _ in range(n)],
      "val": [c for c in range(num_classes) for _ in range(spec["val"])],
      "test": [c for c in range(num_classes) for _ in range(spec["test"])],
  }


def _relative_path(fmt: str, split: str, label: int, i: int) -> str:
  if fmt == "imagenet_lt":
    wnid = f"n{label:08d}"
    return (f"train/{wnid}/{wnid}_{i}.JPEG" if split == "train"
            else f"val/{wnid}/ILSVRC2012_val_{i:08d}.JPEG")
  if fmt == "places_lt":
    return (f"/data_256/c/class_{label}/{i:08d}.jpg" if split == "train"
            else f"val_256/Places365_{split}_{i:08d}.jpg")
  if fmt == "folder":
    return f"Images/class_{label}/{split}_{i}.jpg"
  year = fmt[-4:]
  folder = "train_val_images" if year == "2017" else "train_val2018"
  return f"{folder}/Plantae/species_{label}/{split}_{i:06d}.jpg"


def category_ids(fmt: str, num_classes: int) -> list[int]:
  """iNaturalist category id of each class: 0..C-1 for 2018, sparse ids for 2017 (tests mapping)."""
  return list(range(num_classes)) if fmt == "inat2018" else [7 + 5 * c for c in range(num_classes)]


def write(fmt: str, root: str, seed: int = 0) -> dict[str, str]:
  """Writes the miniature of ``fmt`` under ``root``; returns {split: list file path or ''}."""
  if fmt not in SPECS:
    raise ValueError(f"format={fmt!r} is unknown; expected one of {list(FORMATS)}")
  spec = SPECS[fmt]
  rng = np.random.default_rng(seed)
  if fmt == "mit67":
    for label, count in enumerate(spec["images"]):
      for i in range(count):
        _save(root, f"Images/class_{label}/img_{i:04d}.jpg",
              synthetic_image(rng, label, len(spec["images"])))
    written = split_lists.write_mit67_split(root, seed=seed)["lists"]
    return {"train": written["train"], "val": "", "test": written["test"]}
  num_classes = len(spec["train"])
  items = _split_items(spec)
  os.makedirs(root, exist_ok=True)
  written = {}
  for split, labels in items.items():
    name = LISTS[fmt][split]
    if not name or not labels:
      written[split] = ""
      continue
    rels = [_relative_path(fmt, split, label, i) for i, label in enumerate(labels)]
    for rel, label in zip(rels, labels):
      _save(root, rel, synthetic_image(rng, label, num_classes))
    path = os.path.join(root, name)
    if SOURCE[fmt] == "split_file":
      with open(path, "w") as f:
        for rel, label in zip(rels, labels):
          f.write(f"{rel}\n" if fmt == "folder" else f"{rel} {label}\n")
    else:
      ids = category_ids(fmt, num_classes)
      offset = {"train": 0, "val": 100_000, "test": 200_000}[split]
      record = {
          "images": [{"id": offset + i, "file_name": rel, "width": 0, "height": 0}
                     for i, rel in enumerate(rels)],
          "annotations": [{"id": offset + i, "image_id": offset + i, "category_id": ids[label]}
                          for i, label in enumerate(labels)],
          "categories": [{"id": ids[c], "name": f"species_{c}", "supercategory": "Plantae"}
                         for c in range(num_classes)],
      }
      with open(path, "w") as f:
        json.dump(record, f)
    written[split] = path
  return written


def main(argv: list[str]) -> int:
  if len(argv) != 2 or argv[0] not in SPECS:
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2
  written = write(argv[0], argv[1])
  print(json.dumps({"format": argv[0], "source": SOURCE[argv[0]], "path": argv[1], **written}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
