"""Focal loss (gamma = 1, LDAM-DRW repo) on CIFAR-10-LT IF 100; recipe of ce_cifar.py."""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.loss.name = "focal"
  c.loss.focal_gamma = 1.0
  return default.apply_args(c, arg)
