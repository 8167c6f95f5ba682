"""The training loop end to end on the digits data: outputs, resume equality, errors."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from configs import ce_cifar
import lt_jax
from lt_jax import checkpointing
from lt_jax import config as config_lib
from lt_jax import files
from lt_jax import loop
from lt_jax import metric_writer
from lt_jax import provenance
from lt_jax import run
from lt_jax import train


def smoke_config(**overrides):
  config = ce_cifar.get_config("smoke")
  config.train.epochs = 2
  config.train.plots = False
  for name, value in overrides.items():
    section, field = name.split("__")
    config[section][field] = value
  return config


def final_state(config, workdir):
  run = train.setup(config, workdir)
  assert run.start_epoch == config.train.epochs
  return run.state


def test_smoke_run_writes_outputs(tmp_path):
  config = smoke_config(train__plots=True)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert 0 <= summary["final_top1_error"] <= 100
  assert summary["best_top1_error"] <= summary["final_top1_error"]
  assert len(summary["final_per_class_recall"]) == 10
  for name in ("summary.json", "config.json", "data_selection.json", "metrics.jsonl"):
    assert (tmp_path / name).exists(), name
  for name in ("train_labels", "per_class_recall", "recall_vs_count", "confusion", "most_confused",
               "learning_curves"):
    assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 0
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert all("confusion" not in r for r in records)  # C^2 numbers: once, at the end
  assert metric_writer.read_confusion(str(tmp_path)).shape == (10, 10)
  assert [r["epoch"] for r in records if r["kind"] == "train"] == [1, 2]
  assert all(r["compiles"] == 1 for r in records if r["kind"] == "train")
  assert os.listdir(tmp_path / "tensorboard")


def test_resumed_run_equals_uninterrupted(tmp_path):
  straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
  train.train_and_evaluate(smoke_config(), straight)
  train.train_and_evaluate(smoke_config(train__epochs=1), interrupted)  # "killed" after epoch 1
  train.train_and_evaluate(smoke_config(), interrupted)  # same command again: resumes
  a, b = final_state(smoke_config(), straight), final_state(smoke_config(), interrupted)
  chex.assert_trees_all_equal(a.params, b.params)
  chex.assert_trees_all_equal(a.batch_stats, b.batch_stats)
  chex.assert_trees_all_equal(a.opt_state, b.opt_state)
  assert int(a.step) == int(b.step) > 0


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  train.train_and_evaluate(smoke_config(train__epochs=1), str(tmp_path))
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"in epoch 2; stopped. The last good checkpoint \(epoch 1\) is kept"):
    train.train_and_evaluate(smoke_config(optim__lr=1e30, optim__warmup_epochs=0), str(tmp_path))
  assert checkpointing.manager(str(tmp_path), 2).latest_step() == 1


def test_batch_larger_than_data_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="train.batch_size"):
    train.setup(smoke_config(train__batch_size=100_000), str(tmp_path))


def test_bad_fields_are_named_before_any_data_is_read(tmp_path):
  for config, field in ((_with(method="nope"), "config.method"),
                        (smoke_config(augment__pad_mode="wrap"), "augment.pad_mode"),
                        (smoke_config(optim__decay_epochs=(3, 1)), "optim.decay_epochs"),
                        (_with(method="cbmeta", meta=_no_meta()), "meta.strategy")):
    with pytest.raises(ValueError, match=field):
      run.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
  assert config_lib.validate(smoke_config())


def _no_meta():
  meta = smoke_config().meta
  meta.strategy = "none"
  return meta


def _with(**top_level):
  config = smoke_config()
  for name, value in top_level.items():
    config[name] = value
  return config


def test_learning_rate_schedule_matches_ldam_recipe():
  from lt_jax import optim
  config = ce_cifar.get_config()
  lr = optim.learning_rate_schedule(config.optim, steps_per_epoch=97)
  epochs = np.array([0, 1, 4, 5, 159, 160, 179, 180, 199])
  got = np.array([float(lr(e * 97 + 3)) for e in epochs])
  want = np.array([0.02, 0.04, 0.1, 0.1, 0.1, 1e-3, 1e-3, 1e-5, 1e-5])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_no_decay_leaves_cui_focals_classifier_bias_out_of_the_weight_decay():
  """One SGD step on zero gradients is -lr * wd * w: zero for the masked classifier bias only."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from configs import cui_focal_cifar  # pylint: disable=g-import-not-at-top
  from lt_jax import optim
  config = cui_focal_cifar.get_config()
  lr, wd = 0.1, config.optim.weight_decay
  params = {"classifier": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full((3,), 2.0)},
            "block1": {"bias": jnp.full((2,), 2.0)}}  # a bias elsewhere stays decayed
  zeros = {k: {n: jnp.zeros_like(v) for n, v in layer.items()} for k, layer in params.items()}

  def step(optim_config):
    tx = optim.make_optimizer(optim_config, lambda _: lr)
    updates, _ = tx.update(zeros, tx.init(params), params)
    return updates

  masked = step(config.optim)
  np.testing.assert_array_equal(masked["classifier"]["bias"], 0.0)
  np.testing.assert_allclose(masked["classifier"]["kernel"], -lr * wd * 2.0, rtol=1e-6)
  np.testing.assert_allclose(masked["block1"]["bias"], -lr * wd * 2.0, rtol=1e-6)
  assert ce_cifar.get_config().optim.no_decay == ()
  np.testing.assert_allclose(step(ce_cifar.get_config().optim)["classifier"]["bias"],
                             -lr * ce_cifar.get_config().optim.weight_decay * 2.0, rtol=1e-6)
  config.optim.no_decay = ("classifer/bias",)
  with pytest.raises(ValueError, match=r"optim.no_decay pattern 'classifer/bias' matches no parameter"):
    step(config.optim)


def test_init_checkpoint_loads_all_but_the_classifier(tmp_path):
  """model.init_checkpoint copies converted weights into w; the classifier keeps its fresh init."""
  from conftest import context, tiny_config  # pylint: disable=g-import-not-at-top
  from lt_jax import methods  # pylint: disable=g-import-not-at-top
  from lt_jax.models import convert_torchvision  # pylint: disable=g-import-not-at-top
  config = tiny_config(ce_cifar)
  ctx = context(config, (40, 24))
  method = methods.get_method(config.method)
  source = train.init_state(config, ctx, method, (8, 8, 1), seed=1)
  path = str(tmp_path / "pretrained.msgpack")
  convert_torchvision.save_variables(
      jax.device_get({"params": source.params, "batch_stats": source.batch_stats}), path)
  config.model.init_checkpoint = path
  fresh = train.init_state(config, ctx, method, (8, 8, 1), seed=0)
  plain = train.init_state(tiny_config(ce_cifar), ctx, method, (8, 8, 1), seed=0)
  for name in source.params:
    expected = plain.params[name] if name == "classifier" else source.params[name]
    chex.assert_trees_all_equal(fresh.params[name], expected)
  chex.assert_trees_all_equal(fresh.batch_stats, source.batch_stats)


def test_rerun_with_another_config_is_refused_and_safe_changes_are_recorded(tmp_path):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = lambda **fields: tiny_config(ce_cifar, **{"train.epochs": 1, "train.plots": False, **fields})
  workdir = str(tmp_path / "run")
  run.run(config(), workdir)
  records = (tmp_path / "run" / "metrics.jsonl").read_text()
  with pytest.raises(ValueError, match=r"model\.width: 2 there, 4 now; optim\.lr: 0\.1 there, 0\.05 now"):
    run.run(config(**{"optim.lr": 0.05, "model.width": 4}), workdir)
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == records  # nothing trained or written
  saved = json.load(open(tmp_path / "run" / "config.json"))
  for record in (saved[provenance.KEY], json.load(open(tmp_path / "run" / "summary.json"))[provenance.KEY]):
    assert (record["lt_jax"], record["jax"], record["backend"]) == (
        lt_jax.__version__, jax.__version__, jax.default_backend())
    assert record["devices"] == {"kind": jax.devices()[0].device_kind, "count": jax.device_count(),
                                 "local_count": jax.local_device_count(), "process_count": 1}
    assert record["git_commit"] == provenance.git_state()[0]
  saved[provenance.KEY] = {"jax": "0.0.1", "git_commit": "0" * 40}  # another version made the run
  files.write_json_atomic(str(tmp_path / "run" / "config.json"), saved)
  summary = run.run(config(**{"train.epochs": 2}), workdir)  # more epochs: a safe change, resumed
  assert summary["final_epoch"] == 2
  changes = [json.loads(line) for line in open(tmp_path / "run" / "config_changes.jsonl")]
  assert [c["changed"] for c in changes] == [{"train.epochs": {"was": 1, "now": 2}}]
  assert json.load(open(tmp_path / "run" / "config.json"))["train"]["epochs"] == 2
  assert json.load(open(tmp_path / "run" / "config.json"))[provenance.KEY]["jax"] == jax.__version__


def test_plots_stay_bounded_for_thousands_of_classes(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from lt_jax import plots  # pylint: disable=g-import-not-at-top
  num_classes = 2000
  counts = np.maximum(1, (500 * 0.99 ** np.arange(num_classes)).astype(int))
  recall = list(np.linspace(1, 0, num_classes))
  confusion = np.diag(np.full(num_classes, 3, np.int32))
  confusion[1999, 0], confusion[5, 7] = 2, 1  # 2 of few-shot class 1999's 5 images -> class 0
  records = [{"epoch": 1, "loss": 1.0, "top1_error": 50.0}]
  paths = plots.write_all(str(tmp_path), [f"c{i}" for i in range(num_classes)], counts,
                          {"per_class_recall": recall}, confusion, records, records)
  assert sorted(os.path.basename(p) for p in paths) == [  # no 2000 x 2000 matrix
      "confusion_by_group.png", "learning_curves.png", "most_confused.png", "per_class_recall.png",
      "recall_vs_count.png", "train_labels.png"]
  for path in paths:
    assert Image.open(path).size[0] <= plots.MAX_WIDTH * 120
  assert plots.confused_pairs(confusion) == [(1999, 0, 0.4), (5, 7, 0.25)]
  groups, rates = plots.group_confusion(confusion, counts)
  few = counts < 20
  assert groups == ["many", "medium", "few"]
  np.testing.assert_allclose(rates[2], [2 / (3 * few.sum() + 2), 0, 1 - 2 / (3 * few.sum() + 2)])
