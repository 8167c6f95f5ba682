"""A TFDS builder for a local image folder or .zip laid out ``split/class/*.jpg|jpeg|png``.

Layout: ``train/<class>/<image>`` and ``test/<class>/<image>`` at the top of the folder or zip,
or under its one top-level folder. Other files and deeper folders are ignored.

- Labels: ClassLabel with the class folder names sorted as Python sorts strings (as torchvision's
  ImageFolder does); for the CIFAR-10 image-folder copy that is airplane..truck, the CIFAR order.
  Train and test must have the same class folders.
- Order: images sorted by (class, file name); ``disable_shuffling`` keeps that order on disk, so a
  position in a split is the image's rank in that order.
- Pixels: decoded with PIL (no TensorFlow). One channel when the first training image is
  grayscale, else RGB (palettes expanded, alpha dropped); a colour image in a grayscale dataset
  is an error. All images must share one size unless ``image_size`` > 0, which resizes
  (bilinear) every image to image_size x image_size.
- Storage: ``image`` is a uint8 ``Tensor(H, W, C)`` stored as raw bytes, ``label`` a ClassLabel,
  ``array_record`` files under ``<data_dir>/lt_jax_image_folder/<config>/1.0.0``. The config
  name holds a hash of the source path, its size and mtime (every file's, for a folder) and the
  image size, so a changed source is built again; old builds are left in place.
- Bad data fails before training, naming the file and what is wrong: a damaged (truncated,
  corrupt) zip, a zip member that does not read back (CRC or inflate error), an image that does
  not decode, and a class folder with no .jpg|jpeg|png images. With ``skip_bad``
  (``dataset.skip_bad_images``) an image that does not read or decode is left out instead and
  listed (path, reason) in ``SKIPPED_FILE`` beside the build, which the run copies into
  ``data_selection.json``; a class left without training images is still an error. Nothing is
  skipped silently.
"""

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import sys
import zipfile
import zlib

import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow_datasets as tfds

from lt_jax import files

BUILDER_NAME = "lt_jax_image_folder"
DATASET_VERSION = "1.0.0"
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
ZIP_MAGIC = b"PK"
SKIPPED_FILE = "lt_jax_skipped.json"  # beside the build's dataset_info.json (skip_bad builds)
# What a damaged zip or zip member raises while zipfile reads it.
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


@dataclasses.dataclass(frozen=True)
class Listing:
  """The images of a source: per split, (member name, label) in (class, file name) order."""
  path: str
  class_names: tuple[str, ...]
  files: dict[str, tuple[tuple[str, int], ...]]


def is_zip(path: str) -> bool:
  """True for a .zip file."""
  return os.path.isfile(path) and zipfile.is_zipfile(path)


def looks_like_zip(path: str) -> bool:
  """True for a file named ``*.zip`` or starting with the zip magic ``PK`` (even if damaged)."""
  if path.lower().endswith(".zip"):
    return True
  try:
    with open(path, "rb") as f:
      return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
  except OSError:
    return False


def check_zip(path: str) -> None:
  """ValueError naming ``dataset.path`` when the zip's directory does not read (truncated, corrupt).

  Reads the central directory only; member data are checked (CRC) as they are read.
  """
  try:
    with zipfile.ZipFile(path):
      pass
  except PermissionError:
    raise
  except ZIP_ERRORS as e:
    raise ValueError(
        f"dataset.path={path!r} is a damaged zip file of {os.path.getsize(path)} bytes (zipfile: "
        f"{e}); expected a complete .zip of split/class/image files; download or copy it "
        "again") from e


def check_source(path: str) -> str:
  """The absolute path, or FileNotFoundError / ValueError naming ``dataset.path``."""
  if not path:
    raise ValueError("dataset.path is empty; dataset.source='folder' needs a folder or .zip laid "
                     "out split/class/*.jpg|jpeg|png")
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"dataset.path={path!r} does not exist; expected a folder or .zip laid "
                            "out split/class/*.jpg|jpeg|png")
  if os.path.isdir(path):
    return path
  if os.path.isfile(path) and (zipfile.is_zipfile(path) or looks_like_zip(path)):
    check_zip(path)
    return path
  raise ValueError(f"dataset.path={path!r} is neither a folder nor a .zip file; expected a folder "
                   "or .zip laid out split/class/*.jpg|jpeg|png")


class SourceReader(contextlib.AbstractContextManager):
  """Names and bytes of the files in a folder or zip (a zip's directory is read once)."""

  def __init__(self, path: str):
    self.path = path
    self._zip = zipfile.ZipFile(path) if is_zip(path) else None

  def names(self) -> list[str]:
    """Relative posix names of the files."""
    if self._zip is not None:
      return [name for name in self._zip.namelist() if not name.endswith("/")]
    return self._walk(lambda subdirs, files: files)

  def _walk(self, pick) -> list[str]:
    """Relative posix names of what ``pick(subdirs, files)`` selects in each folder of the tree."""
    out = []
    for root, subdirs, names in os.walk(self.path):
      rel = os.path.relpath(root, self.path).replace(os.sep, "/")
      out.extend(n if rel == "." else f"{rel}/{n}" for n in pick(subdirs, names))
    return out

  def dirs(self) -> list[str]:
    """Relative posix names of the folders (a zip's: its folder entries and files' parents)."""
    if self._zip is not None:
      dirs = set()
      for name in self._zip.namelist():
        parts = name.rstrip("/").split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if name.endswith("/"):
          dirs.add(name.rstrip("/"))
      return sorted(dirs)
    return self._walk(lambda subdirs, files: subdirs)

  def empty_dirs(self) -> list[str]:
    """Sorted relative names of the folders of a folder source that hold nothing at all."""
    if self._zip is not None:
      return []
    return sorted(os.path.relpath(root, self.path).replace(os.sep, "/")
                  for root, subdirs, files in os.walk(self.path)
                  if not subdirs and not files and root != self.path)

  def read(self, name: str) -> bytes:
    """The bytes of ``name``; ValueError naming the member of a zip that does not read back."""
    if self._zip is not None:
      try:
        return self._zip.read(name)
      except ZIP_ERRORS as e:
        raise ValueError(
            f"cannot read {name!r} in {self.path}: the zip member is damaged ({type(e).__name__}: "
            f"{e}); download or copy the zip again") from e
    with open(os.path.join(self.path, name), "rb") as f:
      return f.read()

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()

  def __exit__(self, *exc):
    self.close()


def _hidden(part: str) -> bool:
  """Dot files and folders and macOS zip metadata, which the layout ignores."""
  return part.startswith(".") or part == "__MACOSX"


def _image_parts(name: str) -> tuple[str, str, str] | None:
  """(split, class, file) for ``split/class/file.<image suffix>``; None for anything else."""
  parts = name.split("/")
  if (len(parts) != 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES)
      or any(map(_hidden, parts))):
    return None
  return parts[0], parts[1], parts[2]


def _strip_top_folder(names: list[str]) -> tuple[str, list[str]]:
  """(prefix, names without it): descends into a single top-level folder holding the splits."""
  tops = {n.split("/", 1)[0] for n in names if "/" in n}
  tops = {t for t in tops if not _hidden(t)}
  if not tops & set(SPLITS) and len(tops) == 1:
    prefix = tops.pop() + "/"
    return prefix, [n[len(prefix):] for n in names if n.startswith(prefix)]
  return "", names


def list_images(reader: SourceReader) -> Listing:
  """Scans a source and checks the layout; raises ValueError naming what is wrong."""
  path = reader.path
  prefix, names = _strip_top_folder(reader.names())
  by_split = {split: {} for split in SPLITS}
  for name in names:
    parts = _image_parts(name)
    if parts and parts[0] in by_split:
      by_split[parts[0]].setdefault(parts[1], []).append(parts[2])
  folders = [d[len(prefix):] for d in reader.dirs() if d.startswith(prefix)]
  for split in SPLITS:  # train's class folders first
    for folder in sorted(f for f in folders if f.startswith(split + "/")):
      cls = folder[len(split) + 1:]
      if "/" in cls or _hidden(cls) or cls in by_split[split]:
        continue
      inside = sorted(n[len(folder) + 1:] for n in names if n.startswith(folder + "/"))
      held = (f"it holds {len(inside)} other files, e.g. {inside[:3]}; only *.jpg|jpeg|png "
              "directly inside are read" if inside else "it is empty")
      raise ValueError(f"{path}: class folder {prefix + folder!r} has no images ({held}); put its "
                       "images there or remove the folder")
  for split in SPLITS:
    if not by_split[split]:
      raise ValueError(f"{path}: split {split!r} has no images; expected "
                       f"{prefix}{split}/<class>/*.jpg|jpeg|png")
  train_classes, test_classes = set(by_split["train"]), set(by_split["test"])
  if train_classes != test_classes:
    raise ValueError(f"{path}: train and test class folders differ: only in train "
                     f"{sorted(train_classes - test_classes)}, only in test "
                     f"{sorted(test_classes - train_classes)}")
  class_names = tuple(sorted(train_classes))
  files = {
      split: tuple((f"{prefix}{split}/{cls}/{f}", label)
                   for label, cls in enumerate(class_names)
                   for f in sorted(by_split[split][cls]))
      for split in SPLITS
  }
  return Listing(path, class_names, files)


def fingerprint(path: str, image_size: int, skip_bad: bool = False) -> str:
  """Hex hash of the source path, size and mtime (each file's, for a folder), image size and
  ``skip_bad``."""
  if os.path.isdir(path):
    stats = []
    with SourceReader(path) as reader:
      names = sorted(reader.names())
      empty = reader.empty_dirs()
    for name in names:
      st = os.stat(os.path.join(path, name))
      stats.append((name, st.st_size, st.st_mtime_ns))
  else:
    st = os.stat(path)
    stats, empty = [(st.st_size, st.st_mtime_ns)], []
  key = {"path": path, "files": stats, "image_size": image_size, "version": DATASET_VERSION}
  if empty:  # an added empty class folder is a change (the key of other sources stays as it was)
    key["empty_dirs"] = empty
  if skip_bad:  # likewise: the builds without skipping keep their names
    key["skip_bad"] = True
  key = json.dumps(key)
  return hashlib.sha256(key.encode()).hexdigest()[:16]


def config_name(path: str, image_size: int, skip_bad: bool = False) -> str:
  """Builder config name: readable stem, image size and the source fingerprint."""
  stem = re.sub(r"[^\w\-]", "_", os.path.splitext(os.path.basename(path))[0])[:40] or "images"
  return f"{stem}-s{image_size}-{fingerprint(path, image_size, skip_bad)}"


def open_image(data: bytes, where: str) -> Image.Image:
  """A decoded PIL image, or ValueError naming ``where`` when the bytes do not decode."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    reason = (f"PIL cannot identify it as an image of {len(data)} bytes (not a JPEG / PNG, or "
              "its header is damaged)" if isinstance(e, UnidentifiedImageError)
              else f"{type(e).__name__}: {e}")
    raise ValueError(f"cannot decode image {where}: {reason}; replace or remove the file") from e
  return image


def decode_image(data: bytes, where: str, *, channels: int, size: tuple[int, int],
                 resize: bool) -> np.ndarray:
  """(H, W, C) uint8 from encoded bytes; ``size`` is (width, height) as PIL gives it.

  Raises:
    ValueError: naming ``where`` when the bytes do not decode, a colour image is met in a
      grayscale dataset, or the size differs from ``size`` and ``resize`` is off.
  """
  image = open_image(data, where)
  if channels == 1 and image.mode not in GRAY_MODES:
    raise ValueError(f"image {where} is colour ({image.mode}) but the first training image is "
                     "grayscale; give every image the same mode")
  mode = "L" if channels == 1 else "RGB"
  if image.mode != mode:
    image = image.convert(mode)
  if image.size != size:
    if not resize:
      raise ValueError(f"image {where} is {image.size[0]}x{image.size[1]} but the first training "
                       f"image is {size[0]}x{size[1]}; set dataset.image_size to resize every "
                       "image to one square size")
    image = image.resize(size, Image.BILINEAR)
  return np.asarray(image, np.uint8).reshape(size[1], size[0], channels)


def first_image_format(reader: SourceReader, listing: Listing, image_size: int,
                       skip_bad: bool = False) -> tuple[int, tuple[int, int]]:
  """(channels, (width, height)) of the stored images, from the first training image (with
  ``skip_bad``, the first that decodes)."""
  for name, _ in listing.files["train"]:
    try:
      image = open_image(reader.read(name), f"{name!r} in {listing.path}")
    except ValueError:
      if skip_bad:
        continue
      raise
    channels = 1 if image.mode in GRAY_MODES else 3
    return channels, ((image_size, image_size) if image_size else image.size)
  raise ValueError(f"{listing.path}: no training image decodes")


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """Builder config: the source and the image size (0 = native)."""
  path: str = ""
  image_size: int = 0
  skip_bad: bool = False


class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Image folder / zip as a TFDS dataset with ``train`` and ``test`` splits."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: "uint8 Tensor images as bytes; labels = sorted class names."}
  # TFDS 4.9's `code_path` imports `importlib_resources`, which it declares only for Python < 3.9;
  # this builder has no checksums or metadata files to find there.
  code_path = None

  @functools.cached_property
  def reader(self) -> SourceReader:
    return SourceReader(self.builder_config.path)

  @functools.cached_property
  def listing(self) -> Listing:
    return list_images(self.reader)

  @functools.cached_property
  def image_format(self) -> tuple[int, tuple[int, int]]:
    return first_image_format(self.reader, self.listing, self.builder_config.image_size,
                              self.builder_config.skip_bad)

  @functools.cached_property
  def skipped(self) -> list[dict]:
    """The images left out (``skip_bad``): {'path', 'reason'} in build order."""
    return []

  def _info(self) -> tfds.core.DatasetInfo:
    channels, (width, height) = self.image_format
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Images of {self.builder_config.path} (split/class/image).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(height, width, channels), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=self.listing.class_names),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    # One process: on two cores a 2-worker spawn pool saved about 1.3 s of the CIFAR-10 zip's
    # 7-8 s build, not worth workers that re-import the caller's __main__.
    files = self.listing.files[split]
    channels, size = self.image_format
    resize = self.builder_config.image_size > 0
    kept = set()
    for index, (name, label) in enumerate(files):
      try:
        image = decode_image(self.reader.read(name), f"{name!r} in {self.builder_config.path}",
                             channels=channels, size=size, resize=resize)
      except ValueError as e:
        if not self.builder_config.skip_bad:
          raise
        self.skipped.append({"path": os.path.join(self.builder_config.path, name),
                             "reason": str(e)})
        continue
      kept.add(label)
      yield index, {"image": image, "label": label}
    emptied = sorted(set(range(len(self.listing.class_names))) - kept)
    if emptied:
      raise ValueError(f"{self.builder_config.path}: every {split} image of class "
                       f"{self.listing.class_names[emptied[0]]!r} was skipped as unreadable "
                       "(dataset.skip_bad_images); expected at least one that decodes")


def dataset_dir(data_dir: str, config: str) -> str:
  """Where TFDS keeps a prepared config: ``<data_dir>/<builder>/<config>/<version>``."""
  return files.join(data_dir, BUILDER_NAME, config, DATASET_VERSION)


def default_data_dir() -> str:
  """TFDS's default data dir (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
  return files.resolve(os.fspath(tfds.core.constants.DATA_DIR))


def prepare(path: str, image_size: int = 0, data_dir: str = "", skip_bad: bool = False) -> str:
  """Builds the dataset of ``path`` unless already prepared; returns its dataset dir."""
  path = check_source(path)
  if image_size < 0:
    raise ValueError(f"dataset.image_size={image_size!r} must be >= 0")
  data_dir = files.resolve(data_dir or default_data_dir())
  config = FolderConfig(name=config_name(path, image_size, skip_bad), path=path,
                        image_size=image_size, skip_bad=skip_bad)
  target = dataset_dir(data_dir, config.name)

  def build():
    files.check_writable_dir(data_dir, "dataset.data_dir")
    builder = ImageFolderBuilder(config=config, data_dir=data_dir, file_format="array_record")
    # TFDS prints its progress lines to stdout; keep stdout for the caller's own output.
    with builder.reader, contextlib.redirect_stdout(sys.stderr):
      if skip_bad:  # written first: a build without it is never taken as one without skips
        files.write_json_atomic(files.join(os.path.dirname(target), SKIPPED_FILE), None)
      builder.download_and_prepare()
    if skip_bad:
      files.write_json_atomic(files.join(os.path.dirname(target), SKIPPED_FILE), builder.skipped)

  build_once(target, build, process_index=jax.process_index(), process_count=jax.process_count(),
             barrier=lambda: multihost_utils.sync_global_devices(f"lt_jax prepare {config.name}"))
  return target


def build_once(target: str, build, *, process_index: int, process_count: int, barrier) -> None:
  """One build per job: process 0 runs ``build()`` unless ``target`` is prepared already; with
  several processes all then wait at ``barrier()`` (after a failed build process 0 exits and the
  others' barrier fails with it) and read. FileNotFoundError on a process that still finds no
  ``target``: its ``data_dir`` is not the storage process 0 wrote to."""
  info = files.join(target, "dataset_info.json")
  if process_index == 0 and not files.exists(info):
    build()
  if process_count > 1:
    barrier()
  if not files.exists(info):
    raise FileNotFoundError(
        f"{info} is missing on process {process_index} after process 0 prepared it: with "
        f"{process_count} processes, dataset.data_dir must be storage every process sees (a "
        "shared file system or gs://), or prepare it beforehand with python -m lt_jax.data")


def data_sources(path: str, image_size: int = 0, data_dir: str = "",
                 skip_bad: bool = False) -> tuple[dict, tuple[str, ...], list[dict]]:
  """({'train': source, 'test': source}, class names, the images skipped (``skip_bad``: path and
  reason each)) of the prepared folder dataset."""
  target = prepare(path, image_size, data_dir, skip_bad)
  builder = tfds.builder_from_directory(target)
  train, test = builder.as_data_source(split=list(SPLITS))
  skipped = []
  if skip_bad:
    record = files.join(os.path.dirname(target), SKIPPED_FILE)
    skipped = files.read_json(record, "the list of skipped images of the build") \
        if files.exists(record) else None
    if skipped is None:
      raise FileNotFoundError(f"{record} does not list the skipped images of {target} (the build "
                              f"was interrupted); delete {os.path.dirname(target)} to build again")
  return {"train": train, "test": test}, tuple(builder.info.features["label"].names), skipped
