"""Published long-tailed splits as lists of (image, label): split files, iNaturalist JSON, TFDS.

``dataset.source`` picks the reader:

- ``split_file``: ImageNet-LT / Places-LT style text files, one ``relative/path label`` per line
  (blank lines and ``#`` comments skipped; a leading ``/`` is stripped, as Places-LT writes its
  paths), over an image root ``dataset.path``. Any image folder with such lists works; lines with
  only a path (MIT-67's TrainImages.txt) take their class from the image's parent folder, classes
  numbered in sorted folder-name order.
- ``inat_json``: iNaturalist 2017 / 2018 annotation files (``train2018.json``, ``val2018.json``):
  ``images`` [{id, file_name}] and ``annotations`` [{image_id, category_id}], paths under
  ``dataset.path``. Category ids are numbered 0..C-1 in ascending id order (the identity for 2018).
- ``inat_tfds``: the TFDS catalog datasets ``i_naturalist2017`` / ``i_naturalist2018`` read through
  ``tfds.data_source`` when prepared (array_record); images stay encoded until the loader decodes.

``dataset.train_list`` / ``val_list`` / ``test_list`` name the files (absolute, relative to the
working directory, or relative to ``dataset.path``); for ``inat_tfds`` they name TFDS splits
(``train`` / ``validation``). The iNaturalist papers test on the official validation set.

Every split becomes an ``ImageRecords``: int32 labels on the host plus a picklable random-access
source whose items are ``{'data': encoded image bytes, 'label', 'id'}`` (grain workers read them).
"""

import dataclasses
import json
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from lt_jax.data import longtail

SOURCES = ("split_file", "inat_json", "inat_tfds")
SPLITS = ("train", "val", "test")
MAX_REPORTED = 5  # missing images named in an error


class FileSource:
  """Random access to images on disk: item i = {'data': bytes of root/paths[i], 'label', 'id',
  'path'} (the path names the file when it does not decode)."""

  def __init__(self, root: str, paths: Sequence[str], labels: np.ndarray):
    self.root = root
    self.paths = tuple(paths)
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    path = os.path.join(self.root, self.paths[index])
    with open(path, "rb") as f:
      data = f.read()
    return {"data": data, "label": np.int32(self.labels[index]), "id": np.int64(index),
            "path": path}

  def __repr__(self) -> str:
    return f"FileSource(root={self.root!r}, {len(self)} images)"


class TfdsSource:
  """Random access to a prepared TFDS split whose ``image`` stays encoded (SkipDecoding).

  ``opener`` builds the underlying data source; it runs lazily, in each grain worker, so the
  object pickles as (name, split, data_dir).
  """

  def __init__(self, name: str, split: str, data_dir: str = "",
               opener: Optional[Callable[[], Any]] = None):
    self.name, self.split, self.data_dir = name, split, data_dir
    self._opener = opener
    self._source = None

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def source(self):
    if self._source is None:
      self._source = (self._opener or self._open)()
    return self._source

  def _open(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return tfds.data_source(self.name, split=self.split, data_dir=self.data_dir or None,
                            download=False, decoders={"image": tfds.decode.SkipDecoding()},
                            builder_kwargs={"file_format": "array_record"})

  def __len__(self) -> int:
    return len(self.source())

  def __getitem__(self, index: int) -> dict:
    example = self.source()[int(index)]
    return {"data": bytes(example["image"]), "label": np.int32(example["label"]),
            "id": np.int64(index), "path": f"TFDS {self.name} {self.split}[{int(index)}]"}

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r})"


@dataclasses.dataclass(frozen=True)
class ImageRecords:
  """One split: labels (N,) int32 on the host, ``source`` with the encoded images, a description."""
  labels: np.ndarray
  source: Any
  what: str

  def __len__(self) -> int:
    return len(self.labels)

  def subset(self, indices: np.ndarray, what: str) -> "ImageRecords":
    """The records at ``indices`` (ids renumbered 0..len-1)."""
    indices = np.asarray(indices, np.int64)
    return ImageRecords(self.labels[indices], SubsetSource(self.source, indices), what)


class SubsetSource:
  """``source`` restricted to ``indices``; item i is source[indices[i]] with id i."""

  def __init__(self, source, indices: np.ndarray):
    self.base, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return {**self.base[int(self.indices[int(index)])], "id": np.int64(index)}


@dataclasses.dataclass(frozen=True)
class SplitLists:
  """The splits of a large-scale dataset; ``val`` may be None."""
  train: ImageRecords
  val: Optional[ImageRecords]
  test: ImageRecords
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# --- split files -----------------------------------------------------------------------------------

def parse_split_file(path: str) -> list[tuple[str, Optional[int], int]]:
  """[(relative path, label or None, line number)] of a split file.

  Raises ValueError naming the file and line for a line that is not ``path label`` (label a
  non-negative integer) or ``path``, and for a file mixing the two forms.
  """
  entries = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.rsplit(None, 1)
      label = None
      if len(parts) == 2:
        try:
          label = int(parts[1])
        except ValueError:
          raise ValueError(f"{path}:{number}: {line!r} is malformed; expected 'relative/path "
                           f"label' with an integer label, got label {parts[1]!r}") from None
        if label < 0:
          raise ValueError(f"{path}:{number}: label {label} is negative; expected 0..C-1")
      rel = parts[0].lstrip("/")
      if not rel:
        raise ValueError(f"{path}:{number}: {line!r} has an empty image path")
      entries.append((rel, label, number))
  if not entries:
    raise ValueError(f"{path} lists no images; expected one 'relative/path label' per line")
  kinds = {label is None for _, label, _ in entries}
  if len(kinds) > 1:
    number = next(n for _, label, n in entries if label is None)
    raise ValueError(f"{path}:{number}: the line has no label but others do; expected "
                     "'relative/path label' on every line (or labels on none)")
  return entries


def check_images_exist(root: str, entries, what: str) -> None:
  """FileNotFoundError naming the list file, line numbers and root of the first missing images."""
  missing = [(rel, n) for rel, _, n in entries if not os.path.isfile(os.path.join(root, rel))]
  if missing:
    shown = ", ".join(f"{what}:{n}: {rel}" for rel, n in missing[:MAX_REPORTED])
    raise FileNotFoundError(
        f"{len(missing)} of {len(entries)} images listed in {what} are missing under "
        f"dataset.path={root!r}, e.g. {shown}. Point dataset.path at the image root the list's "
        "paths are relative to (or set dataset.check_files=False to skip this check)")


def resolve_list(path: str, root: str, field: str) -> str:
  """A list path as given, else relative to ``root``; FileNotFoundError naming ``field`` (and the
  command that writes it, for the lists lt_jax builds: ``BUILT_LISTS``)."""
  for candidate in (path, os.path.join(root, path)):
    if os.path.isfile(candidate):
      return candidate
  hint = BUILT_LISTS.get(os.path.basename(path))
  raise FileNotFoundError(f"dataset.{field}={path!r} does not exist (looked in the working "
                          f"directory and under dataset.path={root!r})"
                          + (f"; write it with `{hint}`" if hint else ""))


# --- splits built from a folder of all images (MIT-67) ---------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
MIT67_LISTS = ("MIT67_train_60.txt", "MIT67_test_40.txt")
MIT67_COMMAND = "python -m lt_jax.data.mit67 MIT67_ROOT"
BUILT_LISTS = {name: MIT67_COMMAND for name in MIT67_LISTS}
_FRACTION_STREAM = 13


def fraction_split(root: str, images_dir: str = "Images", train_fraction: float = 0.6,
                   seed: int = 0) -> dict[str, list[str]]:
  """{'train': paths, 'test': paths} (relative to ``root``): per class folder of
  ``root/images_dir``, a seeded permutation of its images (sorted names first), the first
  round(f n_c) (at least 1, at most n_c - 1) to train, the rest to test.

  MFM line 204: "the complete dataset with imbalanced train/test splits of 60%/40%" of MIT-67's
  15,620 images in 67 classes (101-738 per class). Seeded by ``np.random.default_rng((seed, 13))``.
  """
  folder = os.path.join(root, images_dir)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder!r} is not a folder; expected {images_dir}/<class>/<image> "
                            "under the dataset root (MIT-67's Images/ folder)")
  if not 0 < train_fraction < 1:
    raise ValueError(f"train_fraction={train_fraction!r} must lie in (0, 1)")
  rng = np.random.default_rng((seed, _FRACTION_STREAM))
  split = {"train": [], "test": []}
  classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  if not classes:
    raise ValueError(f"{folder!r} holds no class folders")
  for name in classes:
    images = sorted(f for f in os.listdir(os.path.join(folder, name))
                    if f.lower().endswith(IMAGE_EXTENSIONS))
    if len(images) < 2:
      raise ValueError(f"{folder}/{name} holds {len(images)} images; a train/test split needs 2")
    order = [images[i] for i in rng.permutation(len(images))]
    n_train = min(max(1, round(train_fraction * len(images))), len(images) - 1)
    split["train"] += [f"{images_dir}/{name}/{f}" for f in order[:n_train]]
    split["test"] += [f"{images_dir}/{name}/{f}" for f in order[n_train:]]
  return split


def write_mit67_split(root: str, out: str = "", seed: int = 0) -> dict:
  """Writes MFM's 60/40 MIT-67 split of ``root/Images`` as path-only lists ``MIT67_LISTS`` (class =
  parent folder) into ``out`` (default ``root``); returns a summary (files, counts)."""
  split = fraction_split(root, "Images", 0.6, seed)
  out = out or root
  os.makedirs(out, exist_ok=True)
  written = {}
  for (part, paths), name in zip(split.items(), MIT67_LISTS):
    path = os.path.join(out, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(f"{p}\n" for p in paths)
    os.replace(path + ".tmp", path)
    written[part] = path
  counts = {}
  for path in split["train"] + split["test"]:
    counts[_folder_class(path)] = counts.get(_folder_class(path), 0) + 1
  return {"root": root, "seed": seed, "lists": written, "classes": len(counts),
          "images": sum(counts.values()), "train": len(split["train"]), "test": len(split["test"]),
          "min_per_class": min(counts.values()), "max_per_class": max(counts.values())}


def _folder_class(rel: str) -> str:
  parent = os.path.dirname(rel)
  return parent.rsplit("/", 1)[-1] if parent else ""


def load_split_files(root: str, lists: dict[str, str], check_files: bool = True) -> SplitLists:
  """SplitLists of ``{'train': file, 'val': file or '', 'test': file}`` over image ``root``.

  Class names: the parent folder of the first training image of each label (labelled lists), or
  the sorted parent folder names themselves (path-only lists).
  """
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"dataset.path={root!r} is not a folder; expected the image root the "
                            "split files' paths are relative to")
  parsed = {}
  for split in SPLITS:
    if not lists.get(split):
      if split == "val":
        continue
      raise ValueError(f"dataset.{split}_list is empty; source 'split_file' needs train and test lists")
    path = resolve_list(lists[split], root, f"{split}_list")
    entries = parse_split_file(path)
    if check_files:
      check_images_exist(root, entries, path)
    parsed[split] = (path, entries)
  labelled = {split: entries[0][1] is not None for split, (_, entries) in parsed.items()}
  if len(set(labelled.values())) > 1:
    raise ValueError(f"split files mix labelled and path-only lines across splits ({labelled}); "
                     "give every list labels, or none")
  if labelled["train"]:
    num_classes = 1 + max(label for _, entries in parsed.values() for _, label, _ in entries)
    class_names = [""] * num_classes
    for rel, label, _ in parsed["train"][1]:
      class_names[label] = class_names[label] or _folder_class(rel) or str(label)
    mapping = None
  else:
    class_names = sorted({_folder_class(rel) for rel, _, _ in parsed["train"][1]})
    mapping = {name: c for c, name in enumerate(class_names)}
  records = {}
  for split, (path, entries) in parsed.items():
    if mapping is None:
      labels = [label for _, label, _ in entries]
    else:
      labels = []
      for rel, _, number in entries:
        if _folder_class(rel) not in mapping:
          raise ValueError(f"{path}:{number}: class folder {_folder_class(rel)!r} of {rel!r} has "
                           "no training image")
        labels.append(mapping[_folder_class(rel)])
    labels = np.asarray(labels, np.int32)
    records[split] = ImageRecords(labels, FileSource(root, [e[0] for e in entries], labels), path)
  _check_train_covers_classes(records["train"], len(class_names))
  return SplitLists(records["train"], records.get("val"), records["test"], tuple(class_names))


def _check_train_covers_classes(train: ImageRecords, num_classes: int) -> None:
  counts = np.bincount(train.labels, minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if len(empty):
    raise ValueError(f"{train.what}: classes {empty[:10].tolist()} ({len(empty)} in all) have no "
                     f"training image; labels must run over 0..{num_classes - 1}")


# --- iNaturalist JSON ------------------------------------------------------------------------------

def parse_inat_json(path: str) -> tuple[list[str], list[int], dict[int, str]]:
  """(file names, category ids, {category id: name}) of an iNaturalist annotation file.

  Every image needs exactly one annotation; errors name the file and the offending entry.
  """
  with open(path, encoding="utf-8") as f:
    try:
      record = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  for key in ("images", "annotations"):
    if not isinstance(record.get(key), list):
      raise ValueError(f"{path}: has no {key!r} list; expected the iNaturalist format with "
                       "'images' [{id, file_name}] and 'annotations' [{image_id, category_id}]")
  category_of = {}
  for i, ann in enumerate(record["annotations"]):
    if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
      raise ValueError(f"{path}: annotations[{i}] = {ann!r} lacks image_id or category_id")
    if ann["image_id"] in category_of:
      raise ValueError(f"{path}: annotations[{i}] is a second annotation of image "
                       f"{ann['image_id']}; expected one per image")
    category_of[ann["image_id"]] = int(ann["category_id"])
  files, categories = [], []
  for i, image in enumerate(record["images"]):
    if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
      raise ValueError(f"{path}: images[{i}] = {image!r} lacks id or file_name")
    if image["id"] not in category_of:
      raise ValueError(f"{path}: images[{i}] (id {image['id']}) has no annotation; an unlabelled "
                       "split (test2018.json) cannot be used; the papers test on the val file")
    files.append(str(image["file_name"]).lstrip("/"))
    categories.append(category_of[image["id"]])
  names = {int(c["id"]): str(c.get("name", c["id"])) for c in record.get("categories", [])
           if isinstance(c, dict) and "id" in c}
  return files, categories, names


def load_inat_json(root: str, lists: dict[str, str], check_files: bool = True) -> SplitLists:
  """SplitLists of iNaturalist JSON files over image ``root`` (val optional)."""
  root = os.path.abspath(os.path.expanduser(root))
  parsed = {}
  for split in SPLITS:
    if not lists.get(split):
      if split == "val":
        continue
      raise ValueError(f"dataset.{split}_list is empty; source 'inat_json' needs train and test "
                       "annotation files (test = the official val file, e.g. val2018.json)")
    path = resolve_list(lists[split], root, f"{split}_list")
    files, categories, names = parse_inat_json(path)
    if check_files:
      check_images_exist(root, [(f, None, f"images[{i}]") for i, f in enumerate(files)], path)
    parsed[split] = (path, files, categories, names)
  ids = sorted(set(parsed["train"][2]) | set(parsed["train"][3]))
  mapping = {cid: c for c, cid in enumerate(ids)}
  names = {**parsed["train"][3]}
  records = {}
  for split, (path, files, categories, _) in parsed.items():
    unknown = sorted(set(categories) - set(mapping))
    if unknown:
      raise ValueError(f"{path}: category ids {unknown[:10]} do not occur in the training file "
                       f"{parsed['train'][0]}")
    labels = np.asarray([mapping[c] for c in categories], np.int32)
    records[split] = ImageRecords(labels, FileSource(root, files, labels), path)
  class_names = tuple(names.get(cid, str(cid)) for cid in ids)
  _check_train_covers_classes(records["train"], len(class_names))
  return SplitLists(records["train"], records.get("val"), records["test"], class_names)


# --- TFDS ------------------------------------------------------------------------------------------

def tfds_labels(source, chunk: int = 4096) -> np.ndarray:
  """All labels of a data source, read in bulk chunks (images stay encoded)."""
  labels = []
  for start in range(0, len(source), chunk):
    items = [source[i] for i in range(start, min(start + chunk, len(source)))]
    labels.extend(int(item["label"]) for item in items)
  return np.asarray(labels, np.int32)


def load_inat_tfds(name: str, lists: dict[str, str], data_dir: str = "",
                   opener: Optional[Callable[[str], Any]] = None) -> SplitLists:
  """SplitLists of a prepared TFDS dataset (``i_naturalist2017`` / ``i_naturalist2018``).

  ``lists`` maps train / val / test to TFDS split names (val may be ''). Labels are read once at
  start (one pass over the records). ``opener(split)`` replaces ``tfds.data_source`` in tests.
  """
  records, class_names = {}, None
  for split in SPLITS:
    tfds_split = lists.get(split, "")
    if not tfds_split:
      if split == "val":
        continue
      raise ValueError(f"dataset.{split}_list is empty; source 'inat_tfds' needs TFDS split names "
                       "for train and test (e.g. 'train' and 'validation')")
    split_opener = (lambda s=tfds_split: opener(s)) if opener else None
    source = TfdsSource(name, tfds_split, data_dir, split_opener)
    try:
      base = source.source()
    except Exception as e:  # pylint: disable=broad-except  (TFDS raises many kinds)
      raise FileNotFoundError(
          f"TFDS dataset {name!r} split {tfds_split!r} is not prepared as array_record in "
          f"{data_dir or 'the TFDS data dir'} ({type(e).__name__}: {e}); prepare it once with "
          f"TensorFlow (`tfds build {name} --file_format=array_record`) or use "
          "dataset.source='inat_json' on the original JSON files") from e
    if class_names is None:
      info = getattr(base, "dataset_info", None)
      label = info.features["label"] if info is not None else None
      class_names = tuple(label.names) if label is not None and hasattr(label, "names") else None
    labels = tfds_labels(source)
    records[split] = ImageRecords(labels, source, f"TFDS {name}[{tfds_split}]")
  if class_names is None:
    class_names = tuple(str(c) for c in range(1 + int(records["train"].labels.max())))
  _check_train_covers_classes(records["train"], len(class_names))
  return SplitLists(records["train"], records.get("val"), records["test"], class_names)


def load_split_lists(dataset, opener=None) -> SplitLists:
  """The SplitLists that ``config.dataset`` names (source, path, *_list, check_files)."""
  lists = {split: dataset.get(f"{split}_list", "") for split in SPLITS}
  check_files = bool(dataset.get("check_files", True))
  if dataset.source == "split_file":
    return load_split_files(dataset.path, lists, check_files)
  if dataset.source == "inat_json":
    return load_inat_json(dataset.path, lists, check_files)
  if dataset.source == "inat_tfds":
    return load_inat_tfds(dataset.name, lists, dataset.get("data_dir", ""), opener)
  raise ValueError(f"dataset.source={dataset.source!r} is not a large-scale source; expected one "
                   f"of {list(SOURCES)}")


# --- meta / development sets -----------------------------------------------------------------------

_META_STREAM = 11


def select_meta(train_labels: np.ndarray, val_labels: Optional[np.ndarray], num_classes: int, *,
                strategy: str, per_class: int, seed: int,
                development: str = "per_class") -> tuple[str, np.ndarray]:
  """(split the meta set indexes: 'train' | 'val' | '', sorted positions) for a given LT split.

  ``meta``: min(K, n_val_c) images per class from the val list, disjoint from training (ImageNet-LT
  and Places-LT ship 20 val images per class); ``development``: copies from the training list,
  ``longtail.development_sizes`` per class (``meta.development``: min(K, n_c) or min(K, n_min)); ``none``: empty. Seeded by ``np.random.default_rng((seed, 11))``.
  """
  if strategy == "none":
    return "", np.zeros((0,), np.int64)
  if strategy not in ("meta", "development"):
    raise ValueError(f"meta.strategy={strategy!r} is not allowed; expected one of "
                     "['none', 'meta', 'development']")
  if per_class < 1:
    raise ValueError(f"meta.per_class={per_class!r} must be >= 1 with meta.strategy={strategy!r}")
  if strategy == "meta" and val_labels is None:
    raise ValueError("meta.strategy='meta' draws the meta set from the val list, but "
                     "dataset.val_list is empty; give one or use meta.strategy='development'")
  split, labels = ("val", val_labels) if strategy == "meta" else ("train", train_labels)
  rng = np.random.default_rng((seed, _META_STREAM))
  pools = [np.flatnonzero(labels == c) for c in range(num_classes)]
  sizes = ([per_class] * num_classes if strategy == "meta" else
           longtail.development_sizes([len(p) for p in pools], per_class, development))
  chosen = [rng.permutation(pool)[:k] for pool, k in zip(pools, sizes)]
  return split, np.sort(np.concatenate(chosen)).astype(np.int64)


__all__ = ["SOURCES", "ImageRecords", "SplitLists", "FileSource", "TfdsSource", "load_split_lists",
           "load_split_files", "load_inat_json", "load_inat_tfds", "parse_split_file",
           "parse_inat_json", "select_meta", "fraction_split", "write_mit67_split"]
