"""The benchmark runs the training loop's own epoch function and reports sane figures."""

import pytest

from configs import mwnet_cifar
from conftest import tiny_config
from lt_jax import bench


def test_benchmark_reports_plain_and_method_timings():
  config = tiny_config(mwnet_cifar, **{"train.batch_size": 8, "meta.batch_size": 8})
  result = bench.benchmark(config, steps=2, repeats=1, image_shape=(8, 8, 1), num_classes=4)
  assert result["devices"] >= 1 and result["platform"] == "cpu"
  for name, method in (("plain", "erm"), ("method", "mwnet")):
    timing = result[name]
    assert timing["method"] == method
    assert timing["compile_seconds"] > 0 and timing["ms_per_iteration"] > 0
    assert timing["images_per_second"] == pytest.approx(8 / (timing["ms_per_iteration"] / 1000), rel=1e-3)
