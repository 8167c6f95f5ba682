"""Large-scale data (split files, iNaturalist JSON, streaming loader), 224-px backbones, conversion."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import large_scale as large_scale_configs
from lt_jax import data as data_lib
from lt_jax import metrics
from lt_jax import models
from lt_jax.data import grain_loader
from lt_jax.data import longtail
from lt_jax.data import miniature
from lt_jax.data import split_lists
from lt_jax.models import convert_torchvision
from lt_jax.models import layers
from lt_jax.models import resnet_imagenet
from lt_jax.models import vgg as vgg_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def minis(tmp_path_factory):
  """{format: root} of every miniature, written once."""
  root = tmp_path_factory.mktemp("minis")
  roots = {fmt: str(root / fmt) for fmt in miniature.FORMATS}
  for fmt, path in roots.items():
    miniature.write(fmt, path)
  return roots


def dataset_config(fmt: str, root: str, **fields) -> ml_collections.ConfigDict:
  lists = miniature.LISTS[fmt]
  config = ml_collections.ConfigDict(dict(
      name=fmt, source=miniature.SOURCE[fmt], path=root, train_list=lists["train"],
      val_list=lists["val"], test_list=lists["test"], check_files=True, data_dir="",
      miniature="", image_size=32))
  config.update(fields)
  return config


def copy_tree(src: str, dst) -> str:
  shutil.copytree(src, dst)
  return str(dst)


# --- parsing, counts, shot groups ------------------------------------------------------------------

def test_split_file_parsing(tmp_path):
  path = tmp_path / "list.txt"
  path.write_text("# comment\n\ntrain/a/1.jpg 0\n/c/b/2.jpg 3\n  dir with space/3.jpg   1  \n")
  assert split_lists.parse_split_file(str(path)) == [
      ("train/a/1.jpg", 0, 3), ("c/b/2.jpg", 3, 4), ("dir with space/3.jpg", 1, 5)]


@pytest.mark.parametrize("text, line, match", [
    ("a/1.jpg 0\na/2.jpg x\n", 2, "integer label"),
    ("a/1.jpg 0\n\na/2.jpg -1\n", 3, "negative"),
    ("a/1.jpg 0\na/2.jpg\n", 2, "no label"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, match):
  path = tmp_path / "bad.txt"
  path.write_text(text)
  with pytest.raises(ValueError, match=match) as e:
    split_lists.parse_split_file(str(path))
  assert f"{path}:{line}:" in str(e.value)


def test_missing_image_names_list_file_and_line(minis, tmp_path):
  root = copy_tree(minis["imagenet_lt"], tmp_path / "copy")
  lines = open(os.path.join(root, "ImageNet_LT_train.txt")).read().splitlines()
  os.remove(os.path.join(root, lines[6].split()[0]))
  with pytest.raises(FileNotFoundError) as e:
    split_lists.load_split_lists(dataset_config("imagenet_lt", root))
  assert f"ImageNet_LT_train.txt:7: {lines[6].split()[0]}" in str(e.value)
  assert "1 of 270" in str(e.value)
  split_lists.load_split_lists(dataset_config("imagenet_lt", root, check_files=False))


def test_missing_list_and_root_name_the_field(minis, tmp_path):
  with pytest.raises(FileNotFoundError, match="dataset.val_list='nope.txt'"):
    split_lists.load_split_lists(dataset_config("imagenet_lt", minis["imagenet_lt"],
                                                val_list="nope.txt"))
  with pytest.raises(FileNotFoundError, match="dataset.path="):
    split_lists.load_split_lists(dataset_config("imagenet_lt", str(tmp_path / "absent")))


@pytest.mark.parametrize("fmt", ["imagenet_lt", "places_lt", "inat2017", "inat2018", "folder"])
def test_class_counts_match_the_written_miniature(minis, fmt):
  splits = split_lists.load_split_lists(dataset_config(fmt, minis[fmt]))
  spec = miniature.SPECS[fmt]
  counts = longtail.per_class_counts(splits.train.labels, splits.num_classes)
  np.testing.assert_array_equal(counts, spec["train"])
  np.testing.assert_array_equal(longtail.per_class_counts(splits.test.labels, splits.num_classes),
                                [spec["test"]] * splits.num_classes)
  assert (splits.val is None) == (not miniature.LISTS[fmt]["val"])
  groups = metrics.shot_groups(counts)
  assert metrics.shot_group_sizes(counts) == {g: int(m.sum()) for g, m in groups.items()}


def test_shot_group_thresholds():
  assert metrics.shot_group_sizes(np.array([101, 100, 20, 19, 1])) == {
      "many": 1, "medium": 2, "few": 2}
  splits_counts = np.array(miniature.SPECS["imagenet_lt"]["train"])  # 120 60 30 20 19 10 6 5
  assert metrics.shot_group_sizes(splits_counts) == {"many": 1, "medium": 3, "few": 4}


def test_inat_json_numbers_sparse_category_ids_in_order(minis):
  splits = split_lists.load_split_lists(dataset_config("inat2017", minis["inat2017"]))
  record = json.load(open(os.path.join(minis["inat2017"], "train2017.json")))
  category = {a["image_id"]: a["category_id"] for a in record["annotations"]}
  ids = sorted({c["id"] for c in record["categories"]})
  expected = [ids.index(category[im["id"]]) for im in record["images"]]
  np.testing.assert_array_equal(splits.train.labels, expected)
  assert splits.class_names == tuple(f"species_{c}" for c in range(len(ids)))


@pytest.mark.parametrize("change, match", [
    (lambda r: r.pop("annotations"), "no 'annotations' list"),
    (lambda r: r["annotations"].pop(3), r"images\[3\] \(id 3\) has no annotation"),
    (lambda r: r["annotations"][0].pop("category_id"), r"annotations\[0\].*lacks"),
])
def test_bad_inat_json_names_file_and_entry(minis, tmp_path, change, match):
  record = json.load(open(os.path.join(minis["inat2018"], "train2018.json")))
  change(record)
  path = tmp_path / "train2018.json"
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=match) as e:
    split_lists.parse_inat_json(str(path))
  assert str(path) in str(e.value)


def test_path_only_lists_take_the_class_from_the_folder(minis):
  splits = split_lists.load_split_lists(dataset_config("folder", minis["folder"]))
  assert splits.class_names == ("class_0", "class_1", "class_2", "class_3")
  paths = splits.train.source.paths
  assert all(f"class_{label}/" in p for p, label in zip(paths, splits.train.labels))


def test_tfds_source_through_a_fake_data_source(minis):
  """inat_tfds reads {'image': encoded bytes, 'label'} items; the loader decodes them."""
  files = split_lists.load_split_lists(dataset_config("inat2018", minis["inat2018"]))

  class Fake:
    def __init__(self, records):
      self.records = records
    def __len__(self):
      return len(self.records)
    def __getitem__(self, i):
      item = self.records.source[i]
      return {"image": item["data"], "label": int(item["label"])}

  opened = {"train": Fake(files.train), "validation": Fake(files.test)}
  splits = split_lists.load_inat_tfds("i_naturalist2018", {"train": "train", "test": "validation"},
                                      opener=opened.__getitem__)
  np.testing.assert_array_equal(splits.train.labels, files.train.labels)
  batch = next(iter(grain_loader.eval_batches(splits.test, global_batch_size=4, image_size=16,
                                             process_index=0, process_count=1)))
  reference = next(iter(grain_loader.eval_batches(files.test, global_batch_size=4, image_size=16,
                                                 process_index=0, process_count=1)))
  np.testing.assert_array_equal(batch["images"], reference["images"])


def test_meta_and_development_sets():
  train = np.repeat(np.arange(3), [30, 8, 2])
  val = np.repeat(np.arange(3), 20)
  split, meta = split_lists.select_meta(train, val, 3, strategy="meta", per_class=10, seed=0)
  assert split == "val" and np.bincount(val[meta]).tolist() == [10, 10, 10]
  split, dev = split_lists.select_meta(train, val, 3, strategy="development", per_class=5, seed=0)
  assert split == "train" and np.bincount(train[dev]).tolist() == [5, 5, 2]
  again = split_lists.select_meta(train, val, 3, strategy="development", per_class=5, seed=0)[1]
  np.testing.assert_array_equal(dev, again)
  with pytest.raises(ValueError, match="dataset.val_list is empty"):
    split_lists.select_meta(train, None, 3, strategy="meta", per_class=5, seed=0)


# --- image operations ------------------------------------------------------------------------------

def test_random_resized_crop_boxes_stay_inside_with_torchvision_ranges():
  rng = np.random.default_rng(0)
  for width, height in [(500, 375), (64, 64), (1000, 10), (10, 1000)]:
    for _ in range(200):
      left, top, w, h = grain_loader.random_resized_crop_box(rng, width, height)
      assert 0 <= left and left + w <= width and 0 <= top and top + h <= height and w > 0 and h > 0
  areas = [np.prod(grain_loader.random_resized_crop_box(rng, 500, 375)[2:]) / (500 * 375)
           for _ in range(500)]
  assert 0.07 < min(areas) and max(areas) <= 1.0 and 0.4 < np.mean(areas) < 0.65
  assert grain_loader.random_resized_crop_box(rng, 1000, 10) == (493, 0, 13, 10)  # fallback


def test_draft_decoding_matches_a_full_decode(tmp_path):
  from PIL import Image
  miniature.write_jpegs(str(tmp_path), 1, width=900, height=700)
  data = (tmp_path / "img_00000.jpg").read_bytes()
  box = lambda w, h: (100, 50, 720, 600)
  drafted = grain_loader.decode_crop_resize(data, box, 112)
  full = Image.open(tmp_path / "img_00000.jpg").convert("RGB")
  reference = np.asarray(full.resize((112, 112), Image.BILINEAR, box=(100, 50, 820, 650)))
  assert drafted.shape == (112, 112, 3) and drafted.dtype == np.uint8
  assert np.abs(drafted.astype(int) - reference).mean() < 3


def test_undecodable_image_names_the_file(tmp_path):
  """In memory (decode_all) and in the streamed loader (grain): the file's path and the reason."""
  (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
  labels = np.zeros(2, np.int32)
  source = split_lists.FileSource(str(tmp_path), ["a.jpg", "a.jpg"], labels)
  records = split_lists.ImageRecords(labels, source, "x")
  message = f"{tmp_path / 'a.jpg'}: cannot decode an image (10 bytes)"
  with pytest.raises(ValueError, match=re.escape(message)):
    grain_loader.decode_all(records, 8)
  loader = grain_loader.TrainLoader(records.subset(np.array([1]), "train"), global_batch_size=1,
                                    image_size=8, seed=0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match=re.escape(message)):
    next(loader)


# --- streaming loader ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenet_splits(minis):
  return split_lists.load_split_lists(dataset_config("imagenet_lt", minis["imagenet_lt"]))


def take(loader, n):
  return [next(loader) for _ in range(n)]


def test_resumed_iteration_continues_with_the_same_batches(imagenet_splits):
  kwargs = dict(global_batch_size=32, image_size=24, seed=3, process_index=0, process_count=1)
  loader = grain_loader.TrainLoader(imagenet_splits.train, **kwargs)
  assert loader.steps_per_epoch == 9  # ceil(270 / 32)
  take(loader, 6)
  state = loader.get_state()
  rest = take(loader, 5)  # crosses the epoch boundary (8 full batches per epoch)
  resumed = grain_loader.TrainLoader(imagenet_splits.train, **kwargs)
  resumed.set_state(state)
  for a, b in zip(rest, take(resumed, 5)):
    for key in ("images", "labels", "ids"):
      np.testing.assert_array_equal(a[key], b[key])
  first = take(grain_loader.TrainLoader(imagenet_splits.train, **kwargs), 1)[0]
  assert first["images"].shape == (32, 24, 24, 3) and first["images"].dtype == np.uint8
  np.testing.assert_array_equal(first["labels"], imagenet_splits.train.labels[first["ids"]])
  other_seed = take(grain_loader.TrainLoader(imagenet_splits.train, **{**kwargs, "seed": 4}), 1)[0]
  assert not np.array_equal(first["ids"], other_seed["ids"])


def test_an_epoch_visits_every_image_once(imagenet_splits):
  loader = grain_loader.TrainLoader(imagenet_splits.train, global_batch_size=27, image_size=8,
                                   seed=0, process_index=0, process_count=1, num_epochs=1)
  ids = np.concatenate([b["ids"] for b in loader])
  np.testing.assert_array_equal(np.sort(ids), np.arange(270))


@pytest.mark.parametrize("hosts", [2, 3])
def test_per_host_shards_are_disjoint_and_cover_the_set(imagenet_splits, hosts):
  shards = []
  for index in range(hosts):
    loader = grain_loader.TrainLoader(imagenet_splits.train, global_batch_size=hosts * 5,
                                     image_size=8, seed=1, process_index=index,
                                     process_count=hosts, num_epochs=1)
    shards.append(np.concatenate([b["ids"] for b in loader]))
  assert sum(len(s) for s in shards) == 270
  np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(270))


def test_eval_batches_pad_with_a_mask_and_line_up_across_hosts(imagenet_splits):
  test = imagenet_splits.test  # 80 images
  per_host = [list(grain_loader.eval_batches(test, global_batch_size=2 * 12, image_size=16,
                                            process_index=i, process_count=2)) for i in range(2)]
  assert [len(b) for b in per_host] == [4, 4]  # 40 per host in batches of 12
  ids = np.concatenate([b["ids"][b["mask"]] for batches in per_host for b in batches])
  np.testing.assert_array_equal(np.sort(ids), np.arange(80))
  last = per_host[0][-1]
  assert last["images"].shape == (12, 16, 16, 3) and last["mask"].sum() == 4
  assert (last["ids"][~last["mask"]] == -1).all()
  uneven = [list(grain_loader.eval_batches(test.subset(np.arange(25), "x"), global_batch_size=3 * 3,
                                          image_size=8, process_index=i, process_count=3))
            for i in range(3)]
  assert len({len(b) for b in uneven}) == 1


def test_batch_must_divide_over_hosts(imagenet_splits):
  with pytest.raises(ValueError, match="train.batch_size=10 must be a positive multiple of the 3"):
    grain_loader.TrainLoader(imagenet_splits.train, global_batch_size=10, image_size=8, seed=0,
                            process_index=0, process_count=3)


def test_worker_processes_give_the_same_batches(imagenet_splits):
  kwargs = dict(global_batch_size=16, image_size=16, seed=2, process_index=0, process_count=1)
  inline = take(grain_loader.TrainLoader(imagenet_splits.train, workers=0, **kwargs), 3)
  workers = grain_loader.TrainLoader(imagenet_splits.train, workers=1, **kwargs)
  for a, b in zip(inline, take(workers, 3)):
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["ids"], b["ids"])


# --- in-memory path and configs --------------------------------------------------------------------

def test_load_keeps_the_published_split_and_draws_meta_from_val(minis, tmp_path, monkeypatch):
  monkeypatch.setenv("LT_JAX_MINIATURES", str(tmp_path / "generated"))
  config = large_scale_configs.build("imagenet_lt", "cbmeta", "smoke")
  data = data_lib.load(config)  # generates the miniature on first use
  assert os.path.isdir(tmp_path / "generated" / "imagenet_lt")
  np.testing.assert_array_equal(data.counts("train"), miniature.SPECS["imagenet_lt"]["train"])
  np.testing.assert_array_equal(data.counts("meta"), [5] * 8)
  assert data.train.images.shape == (270, 32, 32, 3) and len(data.test) == 80
  assert data.selection()["settings"]["meta.from"] == "val"
  config.dataset.image_size = 4096
  with pytest.raises(ValueError, match="would take .* GiB .*loader.stream=True"):
    data_lib.load(config)


def test_every_large_scale_config_builds():
  for key in large_scale_configs.DATASETS:
    for method in large_scale_configs.METHODS:
      full = large_scale_configs.build(key, method)
      smoke = large_scale_configs.build(key, method, "smoke")
      assert full.dataset.source == smoke.dataset.source != "digits"
      assert full.dataset.image_size == 224 and smoke.dataset.image_size == 32
      # streamed, FSA's phase II too; MIT-67 in memory (resized to 224 x 224, MFM line 315)
      in_memory = large_scale_configs.DATASETS[key].get("in_memory", False)
      assert full.loader.stream == smoke.loader.stream == (not in_memory), (key, method)
  assert large_scale_configs.get_config("inat2018,cbmeta").meta.per_class == 2
  with pytest.raises(ValueError, match="DATASET,METHOD"):
    large_scale_configs.get_config("inat2018")


def test_cli_smoke_run_on_the_imagenet_lt_miniature(tmp_path):
  env = {**os.environ, "LT_JAX_MINIATURES": str(tmp_path / "generated"), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_backend_optimization_level=0"}  # compiles ~2x faster on CPU
  result = subprocess.run(
      [sys.executable, "-m", "lt_jax.main", "--config=configs/ce_imagenet_lt.py:smoke",
       f"--workdir={tmp_path / 'run'}", "--config.train.plots=False", "--config.train.epochs=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(tmp_path / "run" / "summary.json"))
  assert summary["final_epoch"] == 1 and 0 <= summary["final_top1_error"] <= 100
  assert summary["final_many_accuracy"] is not None and summary["final_few_accuracy"] is not None


# --- backbones -------------------------------------------------------------------------------------

def abstract_params(model, size=224):
  init = lambda key: model.init(key, jnp.zeros((1, size, size, 3)), train=False)
  return jax.eval_shape(init, jax.random.key(0))


def basic_resnet_params(stage_sizes, num_classes, width=64):
  """Parameter count of an ImageNet ResNet with BasicBlocks, by formula."""
  total = 7 * 7 * 3 * width + 2 * width
  inplanes = width
  for k, blocks in enumerate(stage_sizes):
    planes = width * 2**k
    for i in range(blocks):
      total += 9 * inplanes * planes + 9 * planes * planes + 4 * planes
      if inplanes != planes:
        total += inplanes * planes + 2 * planes
      inplanes = planes
  return total + inplanes * num_classes + num_classes


@pytest.mark.parametrize("name, classes, expected", [
    ("resnet50_imagenet", 1000, 25_557_032),  # torchvision
    ("resnet101_imagenet", 1000, 44_549_160),
    ("resnet152_imagenet", 1000, 60_192_808),
    ("resnet18_imagenet", 1000, 11_689_512),
    ("resnet10_imagenet", 1000, basic_resnet_params((1, 1, 1, 1), 1000)),  # 5,418,792
    ("resnet10_imagenet", 365, basic_resnet_params((1, 1, 1, 1), 365)),
    ("vgg11", 1000, 132_863_336),
    ("vgg11_bn", 1000, 132_868_840),
    ("vgg11", 67, 132_863_336 - 999 * 4097 + 66 * 4097),
    # torchvision vgg11 less fc6, fc7 and its classifier, plus one FC 512 -> 67 (MFM's MIT-67 head)
    ("vgg11_gap", 67, 132_863_336 - (25088 * 4096 + 4096) - (4096 * 4096 + 4096) - 1000 * 4097
     + 67 * 513),
])
def test_parameter_counts(name, classes, expected):
  model = models.get_model(ml_collections.ConfigDict(dict(name=name, width=0)), classes)
  assert models.count_params(abstract_params(model)["params"]) == expected


@pytest.mark.parametrize("name, channels", [("resnet10_imagenet", 512), ("resnet152_imagenet", 2048),
                                            ("vgg11", 512)])
def test_224_shapes_and_feature_maps(name, channels):
  model = models.get_model(ml_collections.ConfigDict(dict(name=name, width=0)), 10)
  variables = abstract_params(model)
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 224, 224, 3)), train=False, return_features=True),
      variables)
  assert logits.shape == (2, 10) and features.shape == (2, 7, 7, channels)


def jitted(model):
  """Eval-mode apply, jitted with XLA's backend optimisations off (compiles ~10x faster on CPU)."""
  return jax.jit(functools.partial(model.apply, train=False),
                 static_argnames=("return_features", "from_stage", "to_stage"),
                 compiler_options={"xla_backend_optimization_level": 0})


def test_small_resnet_contracts_and_bf16():
  model = resnet_imagenet.ImageNetResNet(6, stage_sizes=(1, 2, 1, 1), block="bottleneck", width=4)
  x = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
  variables = models.init_variables(model, jax.random.key(0), x.shape)
  apply = jitted(model)
  logits, features = apply(variables, x, return_features=True)
  head = layers.Classifier(6).apply({"params": variables["params"]["classifier"]},
                                             features.mean(axis=(1, 2)))
  np.testing.assert_allclose(logits, head, rtol=1e-5, atol=1e-5)
  for k in (2,):
    partial = apply(variables, x, to_stage=k)
    np.testing.assert_allclose(apply(variables, partial, from_stage=k), logits,
                               rtol=1e-5, atol=1e-5)
  points = model.modulation_points()
  assert points == {"block1_conv": 16, "block1": 16, "block2_conv": 32, "block2": 32,
                    "block3_conv": 64, "block3": 64, "block4_conv": 128, "block4": 128}
  unit = {p: (jnp.ones((3, c)), jnp.zeros((3, c))) for p, c in points.items()}
  np.testing.assert_allclose(apply(variables, x, modulation=unit), logits, rtol=1e-5, atol=1e-5)
  shifted = {**unit, "block4": (jnp.ones((3, 128)), jnp.ones((3, 128)))}
  assert not np.allclose(apply(variables, x, modulation=shifted), logits)
  bf16 = model.clone(dtype=jnp.bfloat16)
  out, feats = jitted(bf16)(variables, x, return_features=True)
  assert out.dtype == jnp.float32 and feats.dtype == jnp.bfloat16
  np.testing.assert_allclose(out, logits, atol=0.15 * float(jnp.abs(logits).max()) + 0.05)


def test_adaptive_avg_pool_follows_torch():
  x = np.arange(2 * 10 * 10 * 3, dtype=np.float32).reshape(2, 10, 10, 3)
  pooled = np.asarray(vgg_lib.adaptive_avg_pool(jnp.asarray(x), 7))
  starts = [i * 10 // 7 for i in range(7)]
  ends = [-(-(i + 1) * 10 // 7) for i in range(7)]
  expected = np.stack([np.stack([x[:, a:b, c:d].mean((1, 2)) for c, d in zip(starts, ends)], 1)
                       for a, b in zip(starts, ends)], 1)
  np.testing.assert_allclose(pooled, expected, rtol=1e-6)
  one = np.asarray(vgg_lib.adaptive_avg_pool(jnp.asarray(x[:, :1, :1]), 7))
  np.testing.assert_array_equal(one, np.broadcast_to(x[:, :1, :1], (2, 7, 7, 3)))


# --- torchvision conversion ------------------------------------------------------------------------

def torchvision_resnet(depth, num_classes, width=64, rng=None):
  """A state_dict with torchvision's ResNet key names and shapes (torchvision/models/resnet.py)."""
  block, stages = resnet_imagenet.RESNET_DEPTHS[depth]
  make = (lambda shape: rng.normal(size=shape).astype(np.float32)) if rng else np.zeros
  sd = {}

  def conv(name, out, inp, k):
    sd[f"{name}.weight"] = make((out, inp, k, k))

  def bn(name, c):
    for field in ("weight", "bias", "running_mean"):
      sd[f"{name}.{field}"] = make((c,))
    sd[f"{name}.running_var"] = np.abs(make((c,))) + 0.5
    sd[f"{name}.num_batches_tracked"] = np.array(7)

  expansion = 4 if block == "bottleneck" else 1
  conv("conv1", width, 3, 7)
  bn("bn1", width)
  inplanes = width
  for k, blocks in enumerate(stages, start=1):
    planes = width * 2**(k - 1)
    for i in range(blocks):
      p = f"layer{k}.{i}"
      stride = 2 if k > 1 and i == 0 else 1
      if block == "basic":
        conv(f"{p}.conv1", planes, inplanes, 3), bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
      else:
        conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
        conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
        conv(f"{p}.conv3", planes * 4, planes, 1), bn(f"{p}.bn3", planes * 4)
      if stride != 1 or inplanes != planes * expansion:
        conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
        bn(f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  sd["fc.weight"], sd["fc.bias"] = make((num_classes, inplanes)), make((num_classes,))
  return sd


def torchvision_vgg11(num_classes, batch_norm=False, width=64, rng=None):
  """A state_dict with torchvision's vgg11 / vgg11_bn key names and shapes."""
  make = (lambda shape: rng.normal(size=shape).astype(np.float32)) if rng else np.zeros
  sd, index, inp = {}, 0, 3
  for v in vgg_lib.VGG11_LAYERS:
    if v == "M":
      index += 1
      continue
    v = v * width // 64
    sd[f"features.{index}.weight"], sd[f"features.{index}.bias"] = make((v, inp, 3, 3)), make((v,))
    if batch_norm:
      for field in ("weight", "bias", "running_mean"):
        sd[f"features.{index + 1}.{field}"] = make((v,))
      sd[f"features.{index + 1}.running_var"] = np.abs(make((v,))) + 0.5
      sd[f"features.{index + 1}.num_batches_tracked"] = np.array(3)
    index += 3 if batch_norm else 2
    inp = v
  hidden = 4096 * width // 64
  for i, (out, fan_in) in {0: (hidden, inp * 49), 3: (hidden, hidden), 6: (num_classes, hidden)}.items():
    sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"] = make((out, fan_in)), make((out,))
  return sd


def shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


@pytest.mark.parametrize("depth", [10, 50, 152])
def test_resnet_conversion_gives_exactly_the_model_variables(depth):
  sd = torchvision_resnet(depth, 1000)
  variables = convert_torchvision.convert_state_dict(sd)
  model = resnet_imagenet.imagenet_resnet(depth, 1000)
  assert shapes(variables) == shapes(dict(abstract_params(model)))


@pytest.mark.parametrize("batch_norm, width", [(False, 32), (True, 16)])
def test_vgg_conversion_gives_exactly_the_model_variables(batch_norm, width):
  variables = convert_torchvision.convert_state_dict(torchvision_vgg11(67, batch_norm, width))
  model = vgg_lib.vgg11(67, width=width, batch_norm=batch_norm)
  assert shapes(variables) == shapes(dict(abstract_params(model)))


def test_conversion_round_trips_and_rejects_foreign_keys():
  sd = torchvision_resnet(18, 5, width=8, rng=np.random.default_rng(0))
  back = convert_torchvision.to_torchvision(convert_torchvision.convert_state_dict(sd), "resnet")
  assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
  for key, value in back.items():
    np.testing.assert_array_equal(value, sd[key])
  vgg = torchvision_vgg11(4, True, width=8, rng=np.random.default_rng(1))
  back = convert_torchvision.to_torchvision(convert_torchvision.convert_state_dict(vgg), "vgg")
  for key, value in back.items():
    np.testing.assert_array_equal(value, vgg[key])
  with pytest.raises(ValueError, match="'layer1.0.attn.weight' is not part of a ResNet"):
    convert_torchvision.convert_state_dict({**sd, "layer1.0.attn.weight": np.zeros(3)}, "resnet")
  prefixed = {f"module.{k}": v for k, v in sd.items()}
  assert shapes(convert_torchvision.convert_state_dict(prefixed)) == shapes(
      convert_torchvision.convert_state_dict(sd))


# A numpy forward pass with PyTorch semantics (NCHW, OIHW), straight from the state_dict.

def np_conv(x, w, b=None, stride=1, pad=0):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  kh, kw = w.shape[2:]
  oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
  out = np.zeros((x.shape[0], w.shape[0], oh, ow))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
      out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
  return out if b is None else out + b[None, :, None, None]


def np_bn(x, sd, name, eps=1e-5):
  scale = sd[f"{name}.weight"] / np.sqrt(sd[f"{name}.running_var"] + eps)
  shift = sd[f"{name}.bias"] - sd[f"{name}.running_mean"] * scale
  return x * scale[None, :, None, None] + shift[None, :, None, None]


def np_max_pool(x, k, stride, pad=0):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
  oh, ow = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
  return np.max([x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                 for i in range(k) for j in range(k)], axis=0)


def np_resnet18(sd, x):
  relu = lambda v: np.maximum(v, 0)
  x = relu(np_bn(np_conv(x, sd["conv1.weight"], stride=2, pad=3), sd, "bn1"))
  x = np_max_pool(x, 3, 2, 1)
  for k in range(1, 5):
    for i in range(2):
      p, stride = f"layer{k}.{i}", 2 if k > 1 and i == 0 else 1
      y = relu(np_bn(np_conv(x, sd[f"{p}.conv1.weight"], stride=stride, pad=1), sd, f"{p}.bn1"))
      y = np_bn(np_conv(y, sd[f"{p}.conv2.weight"], pad=1), sd, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = np_bn(np_conv(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
      x = relu(y + x)
  return x.mean((2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]


def np_vgg11_bn(sd, x):
  index = 0
  for v in vgg_lib.VGG11_LAYERS:
    if v == "M":
      x, index = np_max_pool(x, 2, 2), index + 1
      continue
    x = np_conv(x, sd[f"features.{index}.weight"], sd[f"features.{index}.bias"], pad=1)
    x = np.maximum(np_bn(x, sd, f"features.{index + 1}"), 0)
    index += 3
  x = np.broadcast_to(x, (*x.shape[:2], 7, 7)).reshape(x.shape[0], -1)  # 1x1 -> 7x7, torch flatten
  for i in (0, 3):
    x = np.maximum(x @ sd[f"classifier.{i}.weight"].T + sd[f"classifier.{i}.bias"], 0)
  return x @ sd["classifier.6.weight"].T + sd["classifier.6.bias"]


def test_converted_weights_reproduce_the_torch_forward_pass():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
  sd = torchvision_resnet(18, 5, width=8, rng=rng)
  sd = {k: v * (0.3 if k.endswith("weight") and v.ndim == 4 else 1) for k, v in sd.items()}
  model = resnet_imagenet.imagenet_resnet(18, 5, width=8)
  logits = jitted(model)(convert_torchvision.convert_state_dict(sd), x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(logits, np_resnet18(sd, x), rtol=1e-3, atol=1e-3)
  vgg = torchvision_vgg11(4, True, width=8, rng=rng)
  vgg = {k: v * (0.2 if k.endswith("weight") and v.ndim >= 2 else 1) for k, v in vgg.items()}
  model = vgg_lib.vgg11(4, width=8, batch_norm=True)
  logits = jitted(model)(convert_torchvision.convert_state_dict(vgg), x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(logits, np_vgg11_bn(vgg, x), rtol=1e-3, atol=1e-3)


def test_cli_converts_npz_and_load_pretrained_keeps_the_new_classifier(tmp_path):
  sd = torchvision_resnet(10, 1000, width=8, rng=np.random.default_rng(2))
  np.savez(tmp_path / "r10.npz", **sd)
  result = subprocess.run([sys.executable, "-m", "lt_jax.models.convert_torchvision",
                           str(tmp_path / "r10.npz"), str(tmp_path / "r10.msgpack")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  model = resnet_imagenet.imagenet_resnet(10, 365, width=8)
  fresh = models.init_variables(model, jax.random.key(0), (1, 32, 32, 3))
  loaded = convert_torchvision.load_pretrained(fresh, str(tmp_path / "r10.msgpack"))
  np.testing.assert_array_equal(loaded["params"]["stem_conv"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded["batch_stats"]["stem_bn"]["var"], sd["bn1.running_var"])
  np.testing.assert_array_equal(loaded["params"]["classifier"]["kernel"],
                                fresh["params"]["classifier"]["kernel"])
  wider = resnet_imagenet.imagenet_resnet(10, 365, width=16)
  other = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(abstract_params(wider, 32)))
  with pytest.raises(ValueError, match=r"r10.msgpack: .* has shape \(8,\); the model expects \(16,\)"):
    convert_torchvision.load_pretrained(other, str(tmp_path / "r10.msgpack"))


# --- MIT-67 (MFM Table 4): the 60/40 split, VGG-11 with GAP, pretrained weights --------------------

def test_mit67_split_is_seeded_per_class_60_40_and_written_by_the_command(minis, tmp_path):
  root = minis["mit67"]
  split = split_lists.fraction_split(root, seed=0)
  assert split == split_lists.fraction_split(root, seed=0)  # reproducible
  assert split != split_lists.fraction_split(root, seed=1)
  everything = sorted(split["train"] + split["test"])
  assert len(set(everything)) == len(everything) == sum(miniature.SPECS["mit67"]["images"])
  for label, total in enumerate(miniature.SPECS["mit67"]["images"]):
    train = [p for p in split["train"] if f"/class_{label}/" in p]
    assert len(train) == round(0.6 * total)  # per class, not over the whole set
  result = subprocess.run([sys.executable, "-m", "lt_jax.data.mit67", root, "--seed=0",
                           f"--out={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["images"] == len(everything)
  written = [open(tmp_path / name).read().split() for name in split_lists.MIT67_LISTS]
  assert written == [split["train"], split["test"]]
  splits = split_lists.load_split_lists(dataset_config("mit67", root))  # what the configs read
  np.testing.assert_array_equal(longtail.per_class_counts(splits.train.labels, splits.num_classes),
                                [round(0.6 * n) for n in miniature.SPECS["mit67"]["images"]])
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="MIT67_train_60.txt.*python -m lt_jax.data.mit67"):
    split_lists.load_split_lists(dataset_config("mit67", str(tmp_path / "empty")))


def test_vgg11_gap_keeps_only_the_last_fc_and_loads_converted_vgg11_weights(tmp_path):
  """MFM line 204: VGG-11 'only reserving the last FC layer and adding an average-pooling before
  it'; the torchvision vgg11 weights load into it, fc6 / fc7 dropped, the classifier fresh."""
  from lt_jax import methods  # pylint: disable=g-import-not-at-top
  from lt_jax import train  # pylint: disable=g-import-not-at-top
  from tests.conftest import context  # pylint: disable=g-import-not-at-top
  sd = torchvision_vgg11(1000, width=4, rng=np.random.default_rng(3))
  path = str(tmp_path / "vgg11.msgpack")
  convert_torchvision.save_variables(convert_torchvision.convert_state_dict(sd, "vgg11_gap"), path)
  config = large_scale_configs.build("mit67", "ce", "smoke")
  assert config.model.name == "vgg11_gap"
  config.model.pretrained, config.model.init_checkpoint = True, path
  ctx = context(config, (12, 8, 6, 4, 3))
  assert list(ctx.model.modulation_points()) == [f"conv{k}" for k in range(1, 9)]
  params = train.init_state(config, ctx, methods.get_method("erm"), (32, 32, 3)).params
  assert sorted(params) == ["classifier"] + [f"conv{k}" for k in range(1, 9)]
  np.testing.assert_array_equal(params["conv8"]["kernel"], sd["features.18.weight"].transpose(2, 3, 1, 0))
  assert params["classifier"]["kernel"].shape == (4 * 512 // 64, 5)  # 512 / 16 channels -> 5 classes


def test_a_pretrained_row_without_weights_is_refused_at_load_saying_how_to_make_them(tmp_path):
  for name in ("mit67", "places_lt"):
    config = large_scale_configs.build(name, "ce")
    assert config.model.pretrained
    with pytest.raises(ValueError, match=r"model.pretrained=True.*model.init_checkpoint is empty.*"
                                         r"python -m lt_jax.models.convert_torchvision"):
      models.validate_pretrained(config.model)
    config.model.init_checkpoint = str(tmp_path / "absent.msgpack")
    with pytest.raises(FileNotFoundError, match="model.init_checkpoint=.*absent.msgpack"):
      models.validate_pretrained(config.model)
  (tmp_path / "w.msgpack").write_bytes(b"")
  config.model.init_checkpoint = str(tmp_path / "w.msgpack")
  models.validate_pretrained(config.model)  # there: accepted (its contents are checked at init)
  from lt_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="model.pretrained=True"):  # the one check, at load
    config_lib.validate(large_scale_configs.build("mit67", "mfm"))
