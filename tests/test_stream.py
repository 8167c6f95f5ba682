"""Streaming training (``loader.stream=True``, the streamed feed of lt_jax.train) on a generated ImageNet-LT miniature."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import large_scale as large_scale_configs
from conftest import set_fields
from lt_jax import checkpointing
from lt_jax import metric_writer
from lt_jax import run
from lt_jax import train
from lt_jax.data import miniature

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
  """The ImageNet-LT miniature (270 training images, 8 classes), written once."""
  root = str(tmp_path_factory.mktemp("stream") / "imagenet_lt")
  miniature.write("imagenet_lt", root)
  return root


def stream_config(root: str, method: str = "ce", **fields):
  """The :smoke config of ``method`` on the miniature at 16 px with a width-2 ResNet-8, streamed."""
  config = large_scale_configs.build("imagenet_lt", method, "smoke")
  config.dataset.path = root
  config.dataset.image_size = 16
  config.model.name, config.model.width = "resnet8", 2
  config.train.batch_size = 64  # 5 steps per epoch
  config.train.eval_batch_size = 32
  config.train.plots = False
  config.loader.stream = True
  config.loader.workers = 0
  return set_fields(config, fields)


def final_params(workdir: str, epoch: int):
  """The parameters of the orbax checkpoint of ``epoch`` as a flat {path: array}."""
  path = os.path.join(workdir, "checkpoints", str(epoch), "default")
  state = ocp.StandardCheckpointer().restore(path)
  return {"/".join(map(str, k)): np.asarray(v) for k, v in _flatten(state["params"])}


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


@pytest.fixture(scope="module")
def two_epochs(mini_root, tmp_path_factory):
  """(workdir, summary) of an uninterrupted 2-epoch streamed run."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  return workdir, train.train_and_evaluate(stream_config(mini_root, **{"train.epochs": 2}), workdir)


def test_streamed_run_writes_its_outputs(two_epochs):
  workdir, summary = two_epochs
  assert summary["final_epoch"] == 2 and np.isfinite(summary["final_top1_error"])
  assert 0 <= summary["final_top1_error"] <= 100
  assert json.load(open(os.path.join(workdir, "summary.json"))) == summary
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [(r["kind"], r["epoch"]) for r in records] == [
      ("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]
  assert records[2]["step"] == 10 and np.isfinite(records[2]["loss"])
  # every test image evaluated once (the padded rows of the last batch dropped)
  assert metric_writer.read_confusion(workdir).sum() == 80 and "confusion" not in records[-1]
  selection = json.load(open(os.path.join(workdir, "data_selection.json")))
  assert selection["counts"]["train"] == list(miniature.SPECS["imagenet_lt"]["train"])
  assert sorted(os.listdir(os.path.join(workdir, "loader_state"))) == [
      "process0_train_epoch1.bin", "process0_train_epoch2.bin"]


def test_resumed_run_equals_an_uninterrupted_one(two_epochs, mini_root, tmp_path):
  workdir = str(tmp_path / "resumed")
  train.train_and_evaluate(stream_config(mini_root, **{"train.epochs": 1}), workdir)
  summary = train.train_and_evaluate(stream_config(mini_root, **{"train.epochs": 2}), workdir)
  expected, got = final_params(two_epochs[0], 2), final_params(workdir, 2)
  assert expected.keys() == got.keys()
  for key in expected:
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
  assert summary["final_top1_error"] == two_epochs[1]["final_top1_error"]


def test_resume_without_the_loader_state_is_refused(mini_root, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(stream_config(mini_root, **{"train.epochs": 1}), workdir)
  os.remove(os.path.join(workdir, "loader_state", "process0_train_epoch1.bin"))
  with pytest.raises(FileNotFoundError, match="process0_train_epoch1.bin is missing"):
    train.train_and_evaluate(stream_config(mini_root, **{"train.epochs": 2}), workdir)


def test_meta_method_streams_a_meta_batch(mini_root, tmp_path):
  config = stream_config(mini_root, "cbmeta", **{"train.epochs": 1, "cbmeta.start_epoch": 0,
                                                 "meta.batch_size": 16})
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["final_epoch"] == 1 and np.isfinite(summary["final_top1_error"])
  assert sorted(os.listdir(tmp_path / "loader_state")) == [
      "process0_meta_epoch1.bin", "process0_train_epoch1.bin"]
  selection = json.load(open(tmp_path / "data_selection.json"))
  assert selection["settings"]["meta.from"] == "val" and len(selection["indices"]["meta"]) == 8 * 5
  assert selection["counts"]["meta"] == [5] * 8


@pytest.fixture
def shared_compiles(tmp_path):
  """A persistent compilation cache inside one test: its runs compile the same programs once."""
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  saved = {name: getattr(jax.config, name) for name in (
      "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def test_streamed_phase2_resumed_equals_uninterrupted(two_epochs, mini_root, tmp_path, shared_compiles):
  """FSA's phase II on the streamed feed (ids drawn on the device, exactly those images decoded
  with the loader's crop / flip): stopped after round 1 of 2 and run again, it equals a straight run."""
  def config(steps):
    return stream_config(mini_root, "fsa", **{
        "fsa.phase1_workdir": two_epochs[0], "fsa.steps": steps, "fsa.eval_every": 2,
        "fsa.batch_size": 16, "fsa.num_augment": 1, "fsa.num_confusing": 1})

  straight = run.run(config(4), str(tmp_path / "straight"))
  run.run(config(2), str(tmp_path / "resumed"))  # stops after round 1, checkpointed
  assert ocp.CheckpointManager(str(tmp_path / "resumed" / "checkpoints")).all_steps() == [1]
  resumed = run.run(config(4), str(tmp_path / "resumed"))  # the same command with all 4 steps
  records = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
  assert [(r["kind"], r["epoch"], r["step"]) for r in records if r["kind"] == "train"] == [
      ("train", 1, 2), ("train", 2, 4)]
  a, b = (ocp.StandardCheckpointer().restore(str(tmp_path / d / "checkpoints" / "2" / "default"))
          for d in ("resumed", "straight"))
  assert int(a["step"]) == int(b["step"]) == 4
  for key in ("params", "hparams", "opt_state"):
    for x, y in zip(jax.tree.leaves(a[key]), jax.tree.leaves(b[key])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=key)
  assert not np.array_equal(a["params"]["classifier"]["kernel"],
                            final_params(two_epochs[0], 2)["classifier/kernel"])  # it trained
  assert resumed == straight and straight["final_epoch"] == 2
  assert metric_writer.read_confusion(str(tmp_path / "straight")).sum() == 80  # the streamed test set


@pytest.mark.parametrize("field, value, match", [
    ("dataset.source", "digits", "loader.stream=True needs a streaming dataset.source"),
    ("replicas", 2, "replicas=2"),
    ("dataset.sampler", "class_balanced", "dataset.sampler='class_balanced'"),
    ("augment.mean", (), "augment.mean and augment.std"),
])
def test_unsupported_settings_are_refused(mini_root, tmp_path, field, value, match):
  fields = {field: value}
  if field == "augment.mean":
    fields["augment.std"] = ()
  with pytest.raises(ValueError, match=match):
    run.run(stream_config(mini_root, **fields), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused at load


def test_global_batch_splits_over_two_devices_in_the_cli(tmp_path):
  """The CLI on 2 (forced host) devices: the batch is sharded, the meta method streams both loaders."""
  env = {**os.environ, "LT_JAX_MINIATURES": str(tmp_path / "generated"), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"}
  result = subprocess.run(
      [sys.executable, "-m", "lt_jax.main", "--config=configs/cbmeta_imagenet_lt.py:smoke",
       f"--workdir={tmp_path / 'run'}", "--config.loader.stream=True", "--config.loader.workers=0",
       "--config.train.plots=False", "--config.train.epochs=1", "--config.cbmeta.start_epoch=0",
       "--config.dataset.image_size=16", "--config.model.name=resnet8", "--config.model.width=2"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2 device(s)" in result.stderr
  summary = json.load(open(tmp_path / "run" / "summary.json"))
  assert summary["final_epoch"] == 1 and np.isfinite(summary["final_top1_error"])


def test_loader_states_follow_the_kept_checkpoints(tmp_path):
  folder = tmp_path / "loader_state"
  folder.mkdir()
  for epoch in (1, 2, 3):
    for name in ("train", "meta"):
      (folder / f"process0_{name}_epoch{epoch}.bin").write_bytes(b"{}")
  (folder / "process1_train_epoch1.bin").write_bytes(b"{}")  # another host's: not touched
  checkpointing.prune_loader_states(str(tmp_path), [2, 3])
  assert sorted(os.listdir(folder)) == [
      "process0_meta_epoch2.bin", "process0_meta_epoch3.bin", "process0_train_epoch2.bin",
      "process0_train_epoch3.bin", "process1_train_epoch1.bin"]
