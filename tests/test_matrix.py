"""Every method x {in-memory, streamed} x {replicas 1, 2}: each cell runs to a ``summary.json`` or is
refused at load (``config.validate``, before any data is read) with its reason."""

import importlib
import json
import os

import pytest

from configs import large_scale as large_scale_configs
from conftest import set_fields
from conftest import tiny_config
from lt_jax import config as config_lib
from lt_jax import methods
from lt_jax import run
from lt_jax.data import miniature

CONFIG_MODULE = {"erm": "ce_cifar", "l2rw": "l2rw_cifar", "mwnet": "mwnet_cifar", "cbmeta": "cbmeta_cifar",
                 "mfm": "mfm_cifar", "bbn": "bbn_cifar", "fsa": "fsa_cifar", "crt": "crt_cifar",
                 "tau_norm": "tau_norm_cifar", "lws": "lws_cifar", "posthoc_la": "posthoc_la_cifar"}
TWO_PHASE = sorted(m for m in methods.METHODS if methods.METHODS[m].two_phase)
ONE_PHASE = sorted(m for m in methods.METHODS if not methods.METHODS[m].two_phase)
REFUSED = {  # (method or '*', feed, replicas) -> the reason the message must give
    ("*", "stream", 2): "replicas=2: loader.stream=True trains one model",
    ("bbn", "stream", 1): "needs extra batches from other samplers",
    **{(m, "memory", 2): "two-phase methods fit one head" for m in TWO_PHASE},
}


def test_the_matrix_covers_every_method():
  assert set(CONFIG_MODULE) == set(methods.METHODS)


def cell_config(method: str, feed: str, replicas: int, root: str, phase1: str = ""):
  """The method's own :smoke config, tiny, on the digits (in memory) or the ImageNet-LT miniature."""
  config = tiny_config(importlib.import_module(f"configs.{CONFIG_MODULE[method]}"))
  # plots on for MFM replicas in memory: its finalize draws the t-SNE of gamma / beta per replica
  plots = method == "mfm" and feed == "memory" and replicas > 1
  fields = {"train.epochs": 1, "train.plots": plots, "replicas": replicas}
  if feed == "stream":
    streamed = large_scale_configs.build("imagenet_lt", "ce", "smoke")
    for group in ("dataset", "loader", "augment", "meta"):
      config[group] = streamed[group]
    fields.update({"dataset.path": root, "dataset.image_size": 16, "loader.stream": True,
                   "loader.workers": 0, "train.batch_size": 128, "train.eval_batch_size": 40,
                   "meta.batch_size": 16, "cbmeta.start_epoch": 0})
  group = methods.METHODS[method].phase2_group
  if group:
    fields.update({f"{group}.phase1_workdir": phase1, f"{group}.steps": 4, f"{group}.eval_every": 4,
                   f"{group}.batch_size": 16})
  return set_fields(config, fields)


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("matrix") / "imagenet_lt")
  miniature.write("imagenet_lt", root)
  return root


@pytest.fixture(scope="module")
def phase1(tmp_path_factory, mini_root):
  """One finished phase-I run (erm) per feed, shared by the two-phase cells of that feed."""
  workdirs = {}

  def of(feed: str) -> str:
    if feed not in workdirs:
      workdirs[feed] = str(tmp_path_factory.mktemp(f"phase1_{feed}"))
      run.run(cell_config("erm", feed, 1, mini_root), workdirs[feed])
    return workdirs[feed]

  return of


def reason(method: str, feed: str, replicas: int) -> str | None:
  return REFUSED.get((method, feed, replicas), REFUSED.get(("*", feed, replicas)))


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("feed", ["memory", "stream"])
@pytest.mark.parametrize("method", sorted(methods.METHODS))
def test_cell_runs_or_is_refused_at_load(method, feed, replicas, mini_root, tmp_path, request):
  expected = reason(method, feed, replicas)
  two_phase = methods.METHODS[method].two_phase and not expected
  phase1 = request.getfixturevalue("phase1")(feed) if two_phase else ""
  config = cell_config(method, feed, replicas, mini_root, phase1)
  workdir = tmp_path / "run"
  if expected:
    with pytest.raises(ValueError, match=expected):
      config_lib.validate(config)
    with pytest.raises(ValueError, match=expected):
      run.run(config, str(workdir))
    assert not workdir.exists()
    return
  summary = run.run(config, str(workdir))
  assert json.loads((workdir / "summary.json").read_text()) == summary
  assert 0 <= summary["final_top1_error"] <= 100
  if replicas > 1:
    assert len(summary["replicas"]) == replicas and "final_top1_error_std" in summary
  if method == "mfm":  # the modulator artifact (and with plots the t-SNE), per replica
    for folder in ([workdir] if replicas == 1 else [workdir / f"replica{r}" for r in range(replicas)]):
      assert os.path.exists(folder / "modulator" / "spec.json")
      assert bool(list(folder.glob("plots/tsne_*.png"))) == config.train.plots
