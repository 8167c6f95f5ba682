"""Full raw train and test splits from a TFDS catalog dataset, an image folder / zip, or digits.

``config.dataset.source`` picks one:
- ``tfds``: a prepared TFDS catalog dataset with ``image`` and ``label`` features, read through
  ``tfds.data_source`` (array_record, no TensorFlow needed to read);
- ``folder``: a local folder or .zip laid out ``split/class/*.jpg|jpeg|png``, prepared once by
  ``folder_builder`` into ``dataset.data_dir``;
- ``digits``: scikit-learn's bundled 8x8 digits, split 50 test images per class.

``dataset.image_size`` > 0 resizes every image (PIL, bilinear) to that square size.
"""

import dataclasses
import importlib.util
import os

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from lt_jax.data import folder_builder

SOURCES = ("tfds", "folder", "digits")
SPLITS = ("train", "test")
DIGITS_TEST_PER_CLASS = 50
_DIGITS_SPLIT_SEED = 0  # fixed: the digits train/test split never depends on dataset.seed
_READ_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class SourceData:
  """Full splits: uint8 (N, H, W, C) images and int32 labels, plus the class names."""
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  skipped: tuple = ()  # images left out as unreadable (dataset.skip_bad_images): {'path', 'reason'}


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, C) uint8 resized to (size, size, C), channel by channel (PIL bilinear)."""
  if image.shape[:2] == (size, size):
    return image
  channels = [Image.fromarray(image[..., c]).resize((size, size), Image.BILINEAR)
              for c in range(image.shape[-1])]
  return np.stack([np.asarray(c, np.uint8) for c in channels], axis=-1)


def stack_images(images, image_size: int, what: str) -> np.ndarray:
  """(N, H, W, C) uint8 from a sequence of (H, W[, C]) images, resized when image_size > 0."""
  images = [np.asarray(im) for im in images]
  images = [im[..., None] if im.ndim == 2 else im for im in images]
  if image_size:
    images = [resize_image(im.astype(np.uint8), image_size) for im in images]
  if not images:
    raise ValueError(f"{what} has no images")
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise ValueError(f"images of {what} differ in shape ({sorted(shapes)[:3]}...); set "
                     "dataset.image_size to resize them to one square size")
  return np.stack(images).astype(np.uint8, copy=False)


def read_examples(source) -> list[dict]:
  """Every example of a TFDS data source, read in bulk (``__getitems__``) chunks.

  Bulk reads took 1.3 s for the 50,000 CIFAR-10 training images against 2.8 s one at a time;
  TFDS 4.9 data sources take no slices.
  """
  n = len(source)
  examples = []
  for start in range(0, n, _READ_CHUNK):
    examples.extend(source.__getitems__(list(range(start, min(start + _READ_CHUNK, n)))))
  return examples


def from_data_sources(sources: dict, class_names, image_size: int, what: str,
                      skipped=()) -> SourceData:
  """SourceData of {'train': source, 'test': source} with ``image`` and ``label`` features."""
  arrays = {}
  for split in SPLITS:
    examples = read_examples(sources[split])
    arrays[f"{split}_images"] = stack_images((ex["image"] for ex in examples), image_size,
                                             f"{what} {split}")
    arrays[f"{split}_labels"] = np.asarray([ex["label"] for ex in examples], np.int32)
  return SourceData(**arrays, class_names=tuple(class_names), skipped=tuple(skipped))


def has_tensorflow() -> bool:
  """Whether TensorFlow is installed (needed only to prepare TFDS catalog datasets)."""
  return importlib.util.find_spec("tensorflow") is not None


def _not_prepared(name: str, data_dir: str, error: Exception) -> FileNotFoundError:
  where = data_dir or f"the TFDS data dirs (default {folder_builder.default_data_dir()})"
  return FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared as array_record with 'train' and 'test' splits in "
      f"{where} ({type(error).__name__}: {error}). Preparing a catalog dataset needs TensorFlow "
      "and internet once: pip install 'lt_jax[prepare]', then `tfds build "
      f"{name} --file_format=array_record` (add --data_dir to match dataset.data_dir). Without "
      "them, point dataset.source='folder' and dataset.path at a local image folder or .zip "
      "laid out split/class/*.jpg|png")


def catalog_data_sources(name: str, data_dir: str = "") -> tuple[dict, tuple[str, ...]]:
  """({'train': source, 'test': source}, class names) of a TFDS catalog dataset.

  Prepares it first only when TensorFlow is installed; otherwise it must already be prepared.
  """
  try:
    train, test = tfds.data_source(
        name, split=list(SPLITS), data_dir=data_dir or None, download=has_tensorflow(),
        builder_kwargs={"file_format": "array_record"})
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(
        f"dataset.name={name!r} is not a TFDS catalog dataset; expected an image classification "
        "dataset of tfds.list_builders() with 'image' and 'label' features, such as "
        "['cifar10', 'cifar100', 'fashion_mnist', 'mnist'], or dataset.source='folder'") from e
  except (KeyError, NotImplementedError, FileNotFoundError) as e:
    raise _not_prepared(name, data_dir, e) from e
  features = train.dataset_info.features
  if not ("image" in features and "label" in features
          and isinstance(features["label"], tfds.features.ClassLabel)):
    raise ValueError(f"dataset.name={name!r} has features {list(features)}; expected an 'image' "
                     "and a ClassLabel 'label'")
  return {"train": train, "test": test}, tuple(features["label"].names)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
  """(pixels (1797, 8, 8) float in 0..16, labels int32) of scikit-learn's bundled digits.

  Read from its ``datasets/data/digits.csv.gz`` as ``sklearn.datasets.load_digits`` does, without
  importing scikit-learn (2 s, most of a smoke run's start), unless that file is not there.
  """
  spec = importlib.util.find_spec("sklearn")
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") \
      if spec and spec.submodule_search_locations else ""
  if path and os.path.isfile(path):
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int32)
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow import)
  digits = datasets.load_digits()
  return digits.images, digits.target.astype(np.int32)


def digits_source(image_size: int = 0) -> SourceData:
  """scikit-learn's 8x8 digits as uint8 (round(x * 255 / 16)), 50 test images per class.

  The split is fixed: per class, in label order, a ``RandomState(0)`` shuffle of that class's
  positions; the first 50 are test, the rest train; each split keeps the original order.
  """
  pixels, labels = _read_digits()
  images = np.round(pixels * 255 / 16).astype(np.uint8)[..., None]
  rng = np.random.RandomState(_DIGITS_SPLIT_SEED)
  test = []
  for c in range(10):
    positions = np.flatnonzero(labels == c)
    rng.shuffle(positions)
    test.append(positions[:DIGITS_TEST_PER_CLASS])
  is_test = np.zeros(len(labels), bool)
  is_test[np.concatenate(test)] = True
  return SourceData(
      train_images=stack_images(images[~is_test], image_size, "digits train"),
      train_labels=labels[~is_test],
      test_images=stack_images(images[is_test], image_size, "digits test"),
      test_labels=labels[is_test],
      class_names=tuple(str(c) for c in range(10)))


def load_source(dataset) -> SourceData:
  """The full train and test splits named by ``config.dataset``."""
  source, image_size = dataset.source, int(dataset.image_size)
  if source not in SOURCES:
    raise ValueError(f"dataset.source={source!r} is not allowed; expected one of {list(SOURCES)}")
  if image_size < 0:
    raise ValueError(f"dataset.image_size={image_size!r} must be >= 0 (0 = native size)")
  if source == "digits":
    return digits_source(image_size)
  skipped = ()
  if source == "folder":
    sources, class_names, skipped = folder_builder.data_sources(
        dataset.path, image_size, dataset.data_dir, dataset.get("skip_bad_images", False))
    what = f"folder {os.path.basename(str(dataset.path))}"
  else:
    sources, class_names = catalog_data_sources(dataset.name, dataset.data_dir)
    what = f"TFDS {dataset.name}"
  return from_data_sources(sources, class_names, image_size, what, skipped)
