"""The evaluate, predict and export commands on one tiny digits run trained once."""

import csv
import json
import os

import numpy as np
import pytest

from configs import ce_cifar
from conftest import tiny_config
from lt_jax import evaluate
from lt_jax import export
from lt_jax import predict
from lt_jax import programs
from lt_jax import train


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A finished 2-epoch run (width-2 ResNet-8 on digits)."""
  path = str(tmp_path_factory.mktemp("commands") / "run")
  config = tiny_config(ce_cifar, **{"train.epochs": 2, "train.plots": False, "train.batch_size": 128})
  train.train_and_evaluate(config, path)
  return path


@pytest.fixture(scope="module")
def loaded(workdir):
  return evaluate.load(workdir)


@pytest.fixture(scope="module")
def digits_test_images():
  from lt_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.digits_source().test_images


def run_files(workdir):
  """{path: (size, mtime)} of everything in the run but its evaluations."""
  out = {}
  for root, dirs, names in os.walk(workdir):
    dirs[:] = [d for d in dirs if d != evaluate.EVAL_DIR]
    for n in names:
      stat = os.stat(os.path.join(root, n))
      out[os.path.join(root, n)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def run_logits(loaded):
  """Logits of 4 images by the run's own predict program (``programs.make_predict_fn``)."""
  run = loaded.run
  fn = programs.make_predict_fn(run.ctx, run.mesh, mean=run.mean, std=run.std, batch_size=4)
  return lambda images: np.asarray(fn(run.state.params, run.state.batch_stats, images))


def test_evaluate_equals_the_runs_final_eval_and_leaves_the_run_alone(workdir):
  before = run_files(workdir)
  result, path = evaluate.evaluate(workdir)
  assert path == os.path.join(workdir, "evaluations", "epoch2.json")
  assert json.load(open(path)) == result
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  for key in ("final_top1_error", "final_top3_error", "final_top5_error", "final_many_accuracy", "final_few_accuracy",
              "final_per_class_recall", "final_epoch"):
    assert result[key] == summary[key], key
  assert result["checkpoint_epoch"] == 2 and result["overrides"] == {}
  assert run_files(workdir) == before  # nothing of the run written


def test_evaluate_on_test1_and_refusals(workdir):
  argv = ["evaluate", f"--workdir={workdir}", "--config.model.width=8", "--epoch=1"]
  rest, overrides = evaluate.split_overrides(argv)
  assert rest == ["evaluate", f"--workdir={workdir}", "--epoch=1"] and overrides == {"model.width": "8"}
  with pytest.raises(ValueError, match=r"--config\.model\.width: an evaluation may override only"):
    evaluate.evaluate(workdir, overrides=overrides)
  with pytest.raises(ValueError, match=r"--config\.dataset\.nope: no such config field"):
    evaluate.with_overrides(evaluate.saved_config(workdir), {"dataset.nope": "1"})
  with pytest.raises(ValueError, match=r"has no checkpoint of epoch 7; saved epochs: \[1, 2\]"):
    evaluate.load(workdir, epoch=7)
  assert evaluate.parse_value(10.0, "5", "a.b") == 5.0 and evaluate.parse_value(True, "false", "a.b") is False
  assert evaluate.parse_value((1, 2), "(3, 4)", "a.b") == (3, 4)
  with pytest.raises(ValueError, match=r"--config\.dataset\.test_imbalance='ten': expected a float"):
    evaluate.with_overrides(evaluate.saved_config(workdir), {"dataset.test_imbalance": "ten"})
  result, path = evaluate.evaluate(workdir, epoch=1, overrides={"dataset.test": "test1"})
  assert os.path.basename(path) == "epoch1_dataset.test=test1.json"
  counts = result["test_counts"]
  assert counts[0] < counts[-1] and result["checkpoint_epoch"] == 1  # Test-1: tail-heavy
  assert result["overrides"] == {"dataset.test": "test1"}


def test_predict_folder_top1_is_the_models_argmax(loaded, run_logits, digits_test_images, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = digits_test_images[::97][:4]  # a few shipped digits
  for i, image in enumerate(images):
    folder = tmp_path / "images" / ("sub" if i % 2 else "")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0]).save(folder / f"{i}.png")
  paths = predict.list_images(str(tmp_path / "images"))
  assert len(paths) == 4  # found recursively
  model = export.from_loaded(loaded)
  records = predict.predict(model, paths, k=3, batch_size=4, progress=False)
  order = [int(os.path.basename(p)[0]) for p in paths]
  expected = run_logits(images[order]).argmax(-1)
  assert [r["top"][0]["index"] for r in records] == expected.tolist()
  text = predict.format_rows(records, ".csv", 3)
  table = list(csv.DictReader(text.splitlines()))
  assert [row["class_1"] for row in table] == [model.class_names[i] for i in expected]
  probs = [[float(row[f"prob_{j}"]) for j in (1, 2, 3)] for row in table]
  assert all(p[0] >= p[1] >= p[2] for p in probs)
  (tmp_path / "bad.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.png"):
    predict.predict(model, [str(tmp_path / "bad.png")], progress=False)


def test_export_round_trip_logits_equal_the_workdirs(loaded, run_logits, digits_test_images, tmp_path):
  out = export.save(export.from_loaded(loaded), str(tmp_path / "export"))
  exported = export.load(out)  # no workdir needed from here on
  assert exported.spec["source"]["epoch"] == 2 and len(exported.class_names) == 10
  images = digits_test_images[:4]
  np.testing.assert_array_equal(exported.logits(images), run_logits(images))
  with pytest.raises(ValueError, match="no torchvision counterpart"):
    export.torchvision_state_dict(exported)
