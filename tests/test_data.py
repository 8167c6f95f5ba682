"""Long-tailed data: count tables, selections, and the digits, TFDS catalog and folder sources."""

import json
import os
import pathlib
import subprocess
import sys
import time
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import default
from lt_jax import data as data_lib
from lt_jax.data import folder_builder
from lt_jax.data import longtail
from lt_jax.data import sources
from lt_jax.data import split_lists

CIFAR10_ZIP = pathlib.Path(__file__).parents[2] / "shared/data/cifar10-jpeg.zip"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")

# protocols.md A.2: CIFAR-10 counts, LDAM (n_max = 5000) and MW-Net (n_max = 4990).
LDAM_COUNTS = {
    10: [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
    50: [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100],
    100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
    200: [5000, 2775, 1540, 854, 474, 263, 146, 81, 45, 25],
}
LDAM_TOTALS = {10: 20431, 50: 13996, 100: 12406, 200: 11203}
MWN_COUNTS = {
    10: [4990, 3863, 2991, 2316, 1793, 1388, 1075, 832, 644, 499],
    50: [4990, 3230, 2091, 1354, 877, 567, 367, 238, 154, 99],
    100: [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49],
    200: [4990, 2769, 1537, 853, 473, 262, 145, 80, 44, 24],
}
MWN_TOTALS = {10: 20391, 50: 13967, 100: 12380, 200: 11177}
# protocols.md A.2, CIFAR-100 summary: (minimum count, total) per IF.
CIFAR100_LDAM = {10: (50, 19573), 50: (10, 12608), 100: (5, 10847), 200: (2, 9502)}
CIFAR100_MWN = {10: (49, 19183), 50: (9, 12354), 100: (4, 10626), 200: (2, 9304)}


def cifar_labels(per_class: int = 5000, num_classes: int = 10, seed: int = 0) -> np.ndarray:
  """Balanced labels in a shuffled order, like a CIFAR training split."""
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def select(labels, num_classes=10, **overrides):
  kwargs = dict(imbalance=100.0, profile="exp", protocol="ldam", strategy="none", per_class=10,
                seed=0)
  kwargs.update(overrides)
  return longtail.select_train_meta(labels, num_classes, **kwargs)


def counts_of(labels, indices, num_classes=10):
  return longtail.per_class_counts(np.asarray(labels)[indices], num_classes).tolist()


def config_with(**fields):
  """default.get_config() with 'a.b' fields overridden."""
  config = default.get_config()
  for name, value in fields.items():
    group, field = name.split(".")
    config[group][field] = value
  return config


# Counts.


@pytest.mark.parametrize("imbalance", [10, 50, 100, 200])
def test_counts_match_the_peer_tables(imbalance):
  ldam = longtail.imbalanced_counts(5000, 10, imbalance)
  mwn = longtail.imbalanced_counts(4990, 10, imbalance)
  assert ldam.tolist() == LDAM_COUNTS[imbalance] and ldam.sum() == LDAM_TOTALS[imbalance]
  assert mwn.tolist() == MWN_COUNTS[imbalance] and mwn.sum() == MWN_TOTALS[imbalance]
  for n_max, table in ((500, CIFAR100_LDAM), (490, CIFAR100_MWN)):
    counts = longtail.imbalanced_counts(n_max, 100, imbalance)
    assert (counts.min(), counts.sum()) == table[imbalance]


def test_counts_follow_the_formula():
  for n_max, classes, imbalance in ((5000, 10, 37.5), (600, 7, 3.0), (123, 100, 1000.0)):
    expected = [int(n_max * (1 / imbalance)**(i / (classes - 1))) for i in range(classes)]
    assert longtail.imbalanced_counts(n_max, classes, imbalance).tolist() == expected


def test_step_profile_balanced_and_bad_imbalance():
  assert longtail.imbalanced_counts(5000, 10, 100, "step").tolist() == [5000] * 5 + [50] * 5
  assert longtail.imbalanced_counts(100, 5, 10, "step").tolist() == [100, 100, 10, 10, 10]
  assert longtail.imbalanced_counts(500, 10, 1.0).tolist() == [500] * 10
  assert longtail.imbalanced_counts(500, 10, 1.0, "step").tolist() == [500] * 10
  with pytest.raises(ValueError, match="dataset.imbalance"):
    longtail.imbalanced_counts(500, 10, 0.5)
  with pytest.raises(ValueError, match=r"dataset.profile.*\['exp', 'step'\]"):
    longtail.imbalanced_counts(500, 10, 10, "linear")


# Selections.


def test_ldam_selection_counts_and_mwnet_carve():
  labels = cifar_labels()
  train, meta = select(labels)
  assert counts_of(labels, train) == LDAM_COUNTS[100] and len(meta) == 0
  train, meta = select(labels, protocol="mwnet", strategy="meta", per_class=10)
  assert counts_of(labels, train) == MWN_COUNTS[100]
  assert counts_of(labels, meta) == [10] * 10
  assert not np.intersect1d(train, meta).size


def test_mwnet_with_no_meta_strategy_still_uses_n_max_minus_m():
  labels = cifar_labels()
  train, meta = select(labels, protocol="mwnet", strategy="none", per_class=10)
  assert counts_of(labels, train) == MWN_COUNTS[100] and len(meta) == 0


def test_selection_is_deterministic_per_seed_and_differs_across_seeds():
  labels = cifar_labels(per_class=500)
  first, second = select(labels, seed=3), select(labels, seed=3)
  np.testing.assert_array_equal(first[0], second[0])
  other = select(labels, seed=4)[0]
  assert len(other) == len(first[0]) and not np.array_equal(other, first[0])
  # The training subset does not depend on the meta strategy.
  dev = select(labels, seed=3, strategy="development")[0]
  np.testing.assert_array_equal(dev, first[0])


def test_ldam_selection_reproduces_ldams_algorithm():
  labels = cifar_labels(per_class=300)
  counts = longtail.imbalanced_counts(300, 10, 100)
  np.random.seed(0)  # LDAM's IMBALANCECIFAR10.gen_imbalanced_data
  expected = []
  for c, n in enumerate(counts):
    idx = np.where(labels == c)[0]
    np.random.shuffle(idx)
    expected.append(idx[:n])
  np.testing.assert_array_equal(select(labels)[0], np.sort(np.concatenate(expected)))


def test_ldam_meta_is_disjoint_and_too_large_meta_fails():
  labels = np.concatenate([np.zeros(700, int), np.repeat(np.arange(1, 5), 500)])  # class 0 > n_max
  train, meta = select(labels, num_classes=5, imbalance=10, strategy="meta", per_class=20)
  assert counts_of(labels, train, 5) == longtail.imbalanced_counts(500, 5, 10).tolist()
  assert counts_of(labels, meta, 5) == [20] * 5
  assert not np.intersect1d(train, meta).size
  with pytest.raises(ValueError, match=r"meta.per_class=10.*class 0.*dataset.protocol='mwnet'"):
    select(cifar_labels(per_class=100), strategy="meta", per_class=10)


def test_development_copies_min_k_nc_from_train():
  labels = cifar_labels(per_class=200)
  train, dev = select(labels, imbalance=100, strategy="development", per_class=10)
  train_counts = counts_of(labels, train)
  assert counts_of(labels, dev) == [min(10, n) for n in train_counts]
  assert train_counts[-1] < 10  # the tail gets all of its n_c images
  assert np.isin(dev, train).all()


def test_selection_errors_list_allowed_values():
  labels = cifar_labels(per_class=50)
  for field, kwargs, allowed in (
      ("dataset.protocol", {"protocol": "cui"}, "['ldam', 'mwnet']"),
      ("meta.strategy", {"strategy": "all"}, "['none', 'meta', 'development']"),
      ("dataset.profile", {"profile": "linear"}, "['exp', 'step']")):
    with pytest.raises(ValueError) as error:
      select(labels, **kwargs)
    assert field in str(error.value) and allowed in str(error.value)
  with pytest.raises(ValueError, match="meta.per_class"):
    select(labels, protocol="mwnet", per_class=50)


# Test sets.


def test_imbalanced_test_counts():
  exp = [1000, 774, 599, 464, 359, 278, 215, 166, 129, 100]
  assert longtail.imbalanced_counts(1000, 10, 10).tolist() == exp
  assert longtail.test_counts(1000, 10, "test1", 10, seed=0).tolist() == (
      [100] * 5 + [359, 464, 599, 774, 1000])
  test2 = longtail.test_counts(1000, 10, "test2", 10, seed=0)
  assert sorted(test2.tolist()) == sorted(exp) and test2.tolist() != exp
  np.testing.assert_array_equal(test2, longtail.test_counts(1000, 10, "test2", 10, seed=0))
  assert longtail.test_counts(1000, 10, "balanced", 10, seed=0) is None
  with pytest.raises(ValueError, match="dataset.test_imbalance"):
    longtail.test_counts(1000, 10, "test1", 0.5, seed=0)
  with pytest.raises(ValueError, match=r"dataset.test=.*\['balanced', 'test1', 'test2'\]"):
    longtail.test_counts(1000, 10, "test3", 10, seed=0)


def test_select_test_subsets():
  labels = cifar_labels(per_class=1000, seed=1)
  balanced = longtail.select_test(labels, 10, test="balanced", test_imbalance=10, seed=0)
  np.testing.assert_array_equal(balanced, np.arange(10000))
  for test in ("test1", "test2"):
    chosen = longtail.select_test(labels, 10, test=test, test_imbalance=10, seed=5)
    assert counts_of(labels, chosen) == longtail.test_counts(1000, 10, test, 10, 5).tolist()
    assert len(np.unique(chosen)) == len(chosen)


# Digits and the public API.


def test_digits_source_shapes_and_split_sizes():
  raw = sources.digits_source()
  assert raw.train_images.shape == (1297, 8, 8, 1) and raw.test_images.shape == (500, 8, 8, 1)
  assert raw.train_images.dtype == np.uint8 and raw.train_images.max() == 255
  assert longtail.per_class_counts(raw.test_labels, 10).tolist() == [50] * 10
  assert raw.class_names == tuple("0123456789")
  again = sources.digits_source()
  np.testing.assert_array_equal(raw.test_images, again.test_images)
  assert sources.digits_source(image_size=28).train_images.shape == (1297, 28, 28, 1)


def test_load_digits_end_to_end(tmp_path):
  config = config_with(**{"dataset.source": "digits", "dataset.name": "digits",
                          "dataset.imbalance": 10.0, "meta.strategy": "meta",
                          "dataset.protocol": "mwnet", "meta.per_class": 5})
  data = data_lib.load(config)
  raw = sources.digits_source()
  full = longtail.per_class_counts(raw.train_labels, 10).min()
  assert data.counts("train").tolist() == longtail.imbalanced_counts(full - 5, 10, 10).tolist()
  assert data.counts("meta").tolist() == [5] * 10 and data.counts("test").tolist() == [50] * 10
  assert data.num_classes == 10 and data.train.images.shape[1:] == (8, 8, 1)
  assert data.train.labels.dtype == np.int32 and data.train.indices.dtype == np.int64
  np.testing.assert_array_equal(data.train.images, raw.train_images[data.train.indices])
  np.testing.assert_array_equal(data.meta.labels, raw.train_labels[data.meta.indices])
  summary = json.loads(json.dumps(data.selection()))
  assert summary["counts"]["train"] == data.counts("train").tolist()
  assert summary["totals"] == {"train": len(data.train), "meta": 50, "test": 500}
  assert summary["dataset"] == "digits" and summary["class_names"] == list("0123456789")
  path = data_lib.save_selection(data.selection(), str(tmp_path / "run"))
  saved = json.loads(pathlib.Path(path).read_text())
  assert saved["indices"]["train"] == data.train.indices.tolist()
  assert saved["counts"]["meta"] == [5] * 10 and os.listdir(tmp_path / "run") == ["data_selection.json"]
  assert data_lib.read_selection(str(tmp_path / "run")) == saved


def test_load_empty_meta_and_resize():
  data = data_lib.load(config_with(**{"dataset.source": "digits", "dataset.image_size": 12}))
  assert data.meta.images.shape == (0, 12, 12, 1) and data.meta.labels.shape == (0,)
  assert data.train.images.shape[1:] == (12, 12, 1)


def test_load_rejects_bad_fields_before_reading():
  for fields, message in (
      ({"dataset.source": "web"},
       r"dataset.source.*\['tfds', 'folder', 'digits', 'split_file', 'inat_json', 'inat_tfds'\]"),
      ({"dataset.test": "test9"}, r"dataset.test.*\['balanced', 'test1', 'test2'\]"),
      ({"dataset.imbalance": 0.1}, "dataset.imbalance"),
      ({"meta.strategy": "meta", "meta.per_class": 0}, "meta.per_class"),
      ({"dataset.image_size": -1}, "dataset.image_size")):
    with pytest.raises(ValueError, match=message):
      data_lib.load(config_with(**fields))
  with pytest.raises(ValueError, match="split="):
    data_lib.load(config_with(**{"dataset.source": "digits"})).counts("val")


def test_stack_images_resizes_or_rejects_mixed_sizes():
  images = [np.zeros((3, 3), np.uint8), np.full((4, 5, 1), 255, np.uint8)]
  with pytest.raises(ValueError, match="differ in shape.*dataset.image_size"):
    sources.stack_images(images, 0, "mixed")
  stacked = sources.stack_images(images, 6, "mixed")
  assert stacked.shape == (2, 6, 6, 1) and stacked[1].min() == 255


def test_cli_prints_the_summary_and_writes_the_selection(tmp_path):
  repo = pathlib.Path(__file__).parents[1]
  result = subprocess.run(
      [sys.executable, "-m", "lt_jax.data", "--config=configs/quickstart.py",
       "--config.meta.strategy=development", f"--workdir={tmp_path}"],
      cwd=repo, capture_output=True, text=True, check=True, timeout=120)
  summary = json.loads(result.stdout)
  assert summary["counts"]["train"][0] > summary["counts"]["train"][-1]
  assert summary["counts"]["meta"] == [5] * 10
  assert json.loads((tmp_path / "data_selection.json").read_text())["totals"] == summary["totals"]


def test_channel_stats():
  images = np.random.default_rng(0).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
  mean, std = data_lib.channel_stats(images)
  x = images.astype(np.float64) / 255
  np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    data_lib.channel_stats(x)


# TFDS catalog.


@pytest.fixture
def fixed_tfds_mock(monkeypatch):
  """TFDS 4.9's mock binds the record keys of ``__getitems__`` to ``self``; read them right."""
  from tensorflow_datasets.testing import mocking  # pylint: disable=g-import-not-at-top

  def getitems(record_keys, generator, serialized=False):
    del serialized
    return [generator[key] for key in record_keys]

  monkeypatch.setattr(mocking, "_getitems", getitems)


def test_tfds_catalog_source_under_mock_data(fixed_tfds_mock, tmp_path):
  del fixed_tfds_mock
  config = config_with(**{"dataset.name": "cifar10", "dataset.source": "tfds",
                          "dataset.imbalance": 5.0, "dataset.data_dir": str(tmp_path)})
  with tfds.testing.mock_data(num_examples=400, policy=tfds.testing.MockPolicy.USE_CODE):
    data = data_lib.load(config)
  # cifar10 names its classes while preparing (from batches.meta.txt); unprepared, they are 0..9.
  assert data.class_names == tuple("0123456789")
  assert data.train.images.shape[1:] == (32, 32, 3) and data.train.images.dtype == np.uint8
  assert len(data.test) == 400  # the mock serves num_examples per split
  full = np.bincount(data.test.labels, minlength=10)  # the mock's train and test are the same
  assert data.counts("train").tolist() == longtail.imbalanced_counts(full.min(), 10, 5).tolist()


def test_tfds_unknown_and_unprepared_datasets(tmp_path):
  with pytest.raises(ValueError, match=r"dataset.name='cifar11'.*cifar10"):
    sources.catalog_data_sources("cifar11", str(tmp_path))
  if sources.has_tensorflow():
    pytest.skip("TensorFlow is installed: an unprepared dataset would be downloaded")
  with pytest.raises(FileNotFoundError, match=r"not prepared.*dataset.source='folder'"):
    sources.catalog_data_sources("cifar10", str(tmp_path))


# Image folder / zip.

TINY_CLASSES = ("dog", "ant", "cat")  # labels follow the sorted names: ant 0, cat 1, dog 2
TINY_COUNTS = {"train": 3, "test": 2}


def tiny_pixels(cls: str, split: str, i: int, size=(6, 5)) -> np.ndarray:
  """A distinct (H, W, 3) image per file; number 9 (the JPEG) is flat, so JPEG keeps it."""
  if i == 9:
    return np.full((size[1], size[0], 3), (200, 100, 50), np.uint8)
  seed = TINY_CLASSES.index(cls) * 100 + (split == "test") * 10 + i
  return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def write_tiny_folder(root: pathlib.Path, classes=TINY_CLASSES, counts=TINY_COUNTS):
  """PNG (lossless) images in root/split/class, plus a JPEG and a stray text file."""
  for split, n in counts.items():
    for cls in classes:
      folder = root / split / cls
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(n):
        Image.fromarray(tiny_pixels(cls, split, i)).save(folder / f"{i:03d}.png")
  Image.fromarray(tiny_pixels("ant", "train", 9)).save(root / "train/ant/zzz.jpeg", quality=95)
  (root / "README.txt").write_text("not an image")
  return root


def zip_folder(folder: pathlib.Path, target: pathlib.Path, prefix: str = "") -> pathlib.Path:
  with zipfile.ZipFile(target, "w") as archive:
    for path in sorted(folder.rglob("*")):
      if path.is_file():
        archive.write(path, prefix + path.relative_to(folder).as_posix())
  return target


def folder_config(path, data_dir, **fields):
  return config_with(**{"dataset.source": "folder", "dataset.name": "tiny",
                        "dataset.path": str(path), "dataset.data_dir": str(data_dir),
                        "dataset.imbalance": 1.0, **fields})


def tiny_source_order(split):
  """(class, file number) of each position of a split: sorted (class, file name) order."""
  order = []
  for cls in sorted(TINY_CLASSES):
    order += [(cls, i) for i in range(TINY_COUNTS[split])]
    if split == "train" and cls == "ant":
      order.append(("ant", 9))  # zzz.jpeg
  return order


def check_tiny(data):
  assert data.class_names == ("ant", "cat", "dog")
  assert data.counts("test").tolist() == [2, 2, 2]
  assert data.counts("train").tolist() == [3, 3, 3]  # IF 1: n_max = the smallest class (3)
  assert data.train.images.shape[1:] == (5, 6, 3)
  for split in ("train", "test"):
    chosen = getattr(data, split)
    order = tiny_source_order(split)
    for image, label, index in zip(chosen.images, chosen.labels, chosen.indices):
      cls, number = order[index]
      assert data.class_names[label] == cls
      expected = tiny_pixels(cls, split, number)
      if number == 9:  # JPEG: lossy
        assert np.abs(image.astype(int) - expected).max() <= 3
      else:
        np.testing.assert_array_equal(image, expected)


def test_folder_builder_on_a_folder_with_caching(tmp_path, monkeypatch):
  source = write_tiny_folder(tmp_path / "tiny")
  data = data_lib.load(folder_config(source, tmp_path / "tfds"))
  check_tiny(data)
  built = list((tmp_path / "tfds" / folder_builder.BUILDER_NAME).iterdir())
  assert len(built) == 1

  def no_rebuild(*args, **kwargs):
    raise AssertionError("the prepared dataset was built again")

  monkeypatch.setattr(folder_builder.ImageFolderBuilder, "download_and_prepare", no_rebuild)
  again = data_lib.load(folder_config(source, tmp_path / "tfds"))
  np.testing.assert_array_equal(again.train.images, data.train.images)
  monkeypatch.undo()
  # A changed source is a new config, built next to the old one.
  Image.fromarray(tiny_pixels("cat", "test", 7)).save(source / "test/cat/new.png")
  data_lib.load(folder_config(source, tmp_path / "tfds"))
  assert len(list((tmp_path / "tfds" / folder_builder.BUILDER_NAME).iterdir())) == 2


def test_folder_builder_on_a_zip_with_a_top_folder(tmp_path):
  archive = zip_folder(write_tiny_folder(tmp_path / "tiny"), tmp_path / "tiny.zip", "tiny/")
  data = data_lib.load(folder_config(archive, tmp_path / "tfds"))
  check_tiny(data)
  resized = data_lib.load(folder_config(archive, tmp_path / "tfds", **{"dataset.image_size": 4}))
  assert resized.train.images.shape[1:] == (4, 4, 3)


def test_folder_builder_grayscale(tmp_path):
  root = tmp_path / "gray"
  for split in ("train", "test"):
    for cls in ("a", "b"):
      (root / split / cls).mkdir(parents=True)
      Image.fromarray(np.full((3, 3), 7 if cls == "a" else 9, np.uint8)).save(
          root / split / cls / "x.png")
  data = data_lib.load(folder_config(root, tmp_path / "tfds"))
  assert data.train.images.shape == (2, 3, 3, 1)
  assert data.train.images[data.train.labels == 1].max() == 9


def test_folder_builder_errors(tmp_path):
  data_dir = tmp_path / "tfds"
  with pytest.raises(FileNotFoundError, match="dataset.path=.*does not exist"):
    data_lib.load(folder_config(tmp_path / "missing.zip", data_dir))
  with pytest.raises(ValueError, match="dataset.path is empty"):
    data_lib.load(folder_config("", data_dir))

  corrupt = write_tiny_folder(tmp_path / "corrupt")
  (corrupt / "train/cat/bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"cannot decode image 'train/cat/bad.png' in .*corrupt"):
    data_lib.load(folder_config(corrupt, data_dir))
  archive = zip_folder(corrupt, tmp_path / "corrupt.zip")
  with pytest.raises(ValueError, match=r"'train/cat/bad.png' in .*corrupt.zip"):
    data_lib.load(folder_config(archive, data_dir))

  differ = write_tiny_folder(tmp_path / "differ")
  for path in (differ / "test/dog").iterdir():
    path.unlink()
  (differ / "test/dog").rmdir()
  (differ / "test/emu").mkdir()
  Image.fromarray(tiny_pixels("cat", "test", 0)).save(differ / "test/emu/0.png")
  with pytest.raises(ValueError, match=r"only in train \['dog'\], only in test \['emu'\]"):
    data_lib.load(folder_config(differ, data_dir))

  empty = write_tiny_folder(tmp_path / "empty", counts={"train": 2})
  with pytest.raises(ValueError, match="split 'test' has no images"):
    data_lib.load(folder_config(empty, data_dir))

  sizes = write_tiny_folder(tmp_path / "sizes")
  Image.fromarray(tiny_pixels("cat", "train", 0, size=(7, 7))).save(sizes / "train/cat/big.png")
  with pytest.raises(ValueError, match=r"'train/cat/big.png'.*7x7.*dataset.image_size"):
    data_lib.load(folder_config(sizes, data_dir))
  resized = data_lib.load(folder_config(sizes, data_dir, **{"dataset.image_size": 6}))
  assert resized.train.images.shape[1:] == (6, 6, 3)


def test_damaged_zips_are_named_as_damaged(tmp_path):
  data_dir = tmp_path / "tfds"
  archive = zip_folder(write_tiny_folder(tmp_path / "tiny"), tmp_path / "tiny.zip")
  whole = archive.read_bytes()
  cut = tmp_path / "cut.zip"
  cut.write_bytes(whole[:len(whole) // 2])
  with pytest.raises(ValueError) as error:
    data_lib.load(folder_config(cut, data_dir))
  message = str(error.value)
  assert f"dataset.path={str(cut)!r} is a damaged zip file of {len(whole) // 2} bytes" in message
  assert "zipfile:" in message and "download or copy it again" in message
  assert "neither a folder nor" not in message
  # No .zip suffix, but the zip magic: still a damaged zip; other files are neither.
  magic = tmp_path / "images.bin"
  magic.write_bytes(whole[:100])
  with pytest.raises(ValueError, match=r"images.bin' is a damaged zip file"):
    data_lib.load(folder_config(magic, data_dir))
  (tmp_path / "empty.zip").write_bytes(b"")
  with pytest.raises(ValueError, match=r"empty.zip' is a damaged zip file of 0 bytes"):
    data_lib.load(folder_config(tmp_path / "empty.zip", data_dir))
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(ValueError, match="neither a folder nor a .zip file; expected"):
    data_lib.load(folder_config(tmp_path / "notes.txt", data_dir))


def test_a_damaged_zip_member_is_named(tmp_path):
  archive = zip_folder(write_tiny_folder(tmp_path / "tiny"), tmp_path / "tiny.zip")
  member = "train/cat/001.png"
  with zipfile.ZipFile(archive) as z:
    png = z.read(member)
  whole = archive.read_bytes()
  start = whole.index(png)  # stored, not deflated: the member's bytes appear as they are
  middle = start + len(png) // 2
  archive.write_bytes(whole[:middle] + bytes([whole[middle] ^ 0xFF]) + whole[middle + 1:])
  with pytest.raises(ValueError) as error:
    data_lib.load(folder_config(archive, tmp_path / "tfds"))
  message = str(error.value)
  assert f"cannot read {member!r} in {archive}: the zip member is damaged" in message
  assert "CRC" in message


@pytest.mark.parametrize("bad, reason", [
    (b"not a png", "PIL cannot identify it as an image of 9 bytes"),
    ("truncated", "OSError: image file is truncated"),
])
def test_an_unreadable_image_names_the_file_and_the_reason(tmp_path, bad, reason):
  source = write_tiny_folder(tmp_path / "tiny")
  if bad == "truncated":
    whole = (source / "train/dog/001.png").read_bytes()
    bad = whole[:len(whole) // 2]
  (source / "train/dog/001.png").write_bytes(bad)
  for path in (source, zip_folder(source, tmp_path / "tiny.zip", "tiny/")):
    prefix = "tiny/" if path.suffix == ".zip" else ""
    with pytest.raises(ValueError) as error:
      data_lib.load(folder_config(path, tmp_path / "tfds"))
    message = str(error.value)
    assert f"cannot decode image '{prefix}train/dog/001.png' in {path}: {reason}" in message
    assert "replace or remove the file" in message


def test_a_class_folder_without_images_is_named(tmp_path):
  data_dir = tmp_path / "tfds"
  source = write_tiny_folder(tmp_path / "tiny")
  data_lib.load(folder_config(source, data_dir))  # built and cached without the new folder
  (source / "train/emu").mkdir()
  (source / "test/emu").mkdir()
  with pytest.raises(ValueError, match=r"class folder 'train/emu' has no images \(it is empty\)"):
    data_lib.load(folder_config(source, data_dir))
  Image.fromarray(tiny_pixels("cat", "train", 0)).save(source / "train/emu/0.webp")
  (source / "train/emu/deeper").mkdir()
  Image.fromarray(tiny_pixels("cat", "train", 0)).save(source / "train/emu/deeper/1.png")
  with pytest.raises(ValueError) as error:
    data_lib.load(folder_config(source, data_dir))
  assert "class folder 'train/emu' has no images (it holds 2 other files, e.g. ['0.webp', " \
         "'deeper/1.png']; only *.jpg|jpeg|png directly inside are read)" in str(error.value)
  # A zip's folder entry for an empty class.
  (source / "train/emu/0.webp").unlink()
  (source / "train/emu/deeper/1.png").unlink()
  (source / "train/emu/deeper").rmdir()
  (source / "train/emu").rmdir()
  archive = zip_folder(source, tmp_path / "tiny.zip", "top/")
  with zipfile.ZipFile(archive, "a") as z:
    z.writestr("top/test/emu/", b"")
  with pytest.raises(ValueError, match=r"tiny.zip: class folder 'top/test/emu' has no images"):
    data_lib.load(folder_config(archive, data_dir))


def test_skip_bad_images_leaves_them_out_and_records_them(tmp_path):
  source = write_tiny_folder(tmp_path / "tiny")
  (source / "train/dog/001.png").write_bytes(b"not a png")
  whole = (source / "test/cat/000.png").read_bytes()
  (source / "test/cat/000.png").write_bytes(whole[:len(whole) // 2])
  data = data_lib.load(folder_config(source, tmp_path / "tfds", **{"dataset.skip_bad_images": True}))
  skipped = data.selection()["skipped"]
  assert [s["path"] for s in skipped] == [str(source / "train/dog/001.png"),
                                         str(source / "test/cat/000.png")]
  assert "PIL cannot identify it as an image of 9 bytes" in skipped[0]["reason"]
  assert "OSError: image file is truncated" in skipped[1]["reason"]
  assert data.counts("test").tolist() == [2, 1, 2] and data.counts("train").tolist() == [2, 2, 2]
  # without the flag the same folder fails, naming the first bad image
  with pytest.raises(ValueError, match="cannot decode image 'train/dog/001.png'"):
    data_lib.load(folder_config(source, tmp_path / "tfds"))
  for name in ("000.png", "002.png"):  # every training image of a class unreadable
    (source / "train/dog" / name).write_bytes(b"")
  with pytest.raises(ValueError, match="every train image of class 'dog' was skipped"):
    data_lib.load(folder_config(source, tmp_path / "tfds", **{"dataset.skip_bad_images": True}))


def test_skip_bad_images_is_refused_where_images_are_not_decoded_first():
  with pytest.raises(ValueError, match="dataset.skip_bad_images=True works with "
                                       "dataset.source='folder'"):
    data_lib.load(config_with(**{"dataset.skip_bad_images": True}))


def test_a_read_only_data_dir_is_named_before_building(tmp_path, monkeypatch):
  """A read-only mount as access(2) reports it (EROFS for W_OK; simulated: root writes anywhere)."""
  source = write_tiny_folder(tmp_path / "tiny")
  (tmp_path / "ro").mkdir()
  access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: (not str(path).startswith(
      str(tmp_path / "ro")) or not mode & os.W_OK) and access(path, mode))
  with pytest.raises(PermissionError, match=f"dataset.data_dir {tmp_path}/ro/tfds: {tmp_path}/ro "
                                            "is not writable"):
    data_lib.load(folder_config(source, tmp_path / "ro" / "tfds"))
  assert os.listdir(tmp_path / "ro") == []


def test_lists_naming_a_missing_image_name_the_list_and_the_file(tmp_path):
  from lt_jax.data import split_lists  # pylint: disable=g-import-not-at-top
  root = tmp_path / "root"
  (root / "a").mkdir(parents=True)
  Image.fromarray(tiny_pixels("cat", "train", 0)).save(root / "a/1.png")
  (tmp_path / "train.txt").write_text("a/1.png 0\na/2.png 0\n")
  (tmp_path / "test.txt").write_text("a/1.png 0\n")
  lists = {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}
  with pytest.raises(FileNotFoundError) as error:
    split_lists.load_split_files(str(root), lists)
  assert (f"1 of 2 images listed in {tmp_path / 'train.txt'} are missing under "
          f"dataset.path={str(root)!r}, e.g. {tmp_path / 'train.txt'}:2: a/2.png") in str(error.value)
  annotations = {"images": [{"id": 1, "file_name": "a/1.png"}, {"id": 2, "file_name": "b/9.png"}],
                 "annotations": [{"image_id": 1, "category_id": 0},
                                 {"image_id": 2, "category_id": 0}]}
  (tmp_path / "train.json").write_text(json.dumps(annotations))
  lists = {"train": str(tmp_path / "train.json"), "test": str(tmp_path / "train.json")}
  with pytest.raises(FileNotFoundError) as error:
    split_lists.load_inat_json(str(root), lists)
  assert f"{tmp_path / 'train.json'}:images[1]: b/9.png" in str(error.value)


def test_cifar10_lt_from_the_shared_zip(tmp_path):
  if not CIFAR10_ZIP.exists():
    pytest.skip(f"the shared CIFAR-10 image-folder zip is absent ({CIFAR10_ZIP})")
  start = time.perf_counter()
  config = folder_config(CIFAR10_ZIP, tmp_path / "tfds", **{"dataset.name": "cifar10",
                                                              "dataset.imbalance": 100.0})
  data = data_lib.load(config)
  seconds = time.perf_counter() - start
  assert data.class_names == CIFAR10_CLASSES
  assert data.counts("train").tolist() == LDAM_COUNTS[100] and len(data.train) == 12406
  assert data.counts("test").tolist() == [1000] * 10 and len(data.meta) == 0
  assert data.train.images.shape[1:] == (32, 32, 3) and data.test.images.shape == (10000, 32, 32, 3)
  print(f"CIFAR-10-LT from the zip (build + load): {seconds:.1f} s")


def test_development_size_readings_per_class_or_equal():
  """meta.development: MFM line 129 "20 samples (or the number of the least frequent class when it
  is less than 20) per class": min(K, n_c) per class, or min(K, n_min) for every class."""
  labels = np.repeat(np.arange(10), 100)
  kwargs = dict(imbalance=20.0, profile="exp", protocol="ldam", strategy="development",
                per_class=20, seed=0)
  train, meta = longtail.select_train_meta(labels, 10, **kwargs)
  n = longtail.per_class_counts(labels[train], 10)
  assert n.min() == 5
  np.testing.assert_array_equal(longtail.per_class_counts(labels[meta], 10), np.minimum(n, 20))
  train_eq, meta_eq = longtail.select_train_meta(labels, 10, development="equal", **kwargs)
  np.testing.assert_array_equal(train_eq, train)
  np.testing.assert_array_equal(longtail.per_class_counts(labels[meta_eq], 10), [5] * 10)
  assert set(meta_eq) <= set(train)  # copies of training images
  split, chosen = split_lists.select_meta(labels[train], None, 10, strategy="development",
                                          per_class=20, seed=0, development="equal")
  assert split == "train"
  np.testing.assert_array_equal(longtail.per_class_counts(labels[train][chosen], 10), [5] * 10)
  with pytest.raises(ValueError, match="meta.development"):
    longtail.development_sizes(n, 20, "half")
