"""Class-balanced meta re-weighting with the focal base loss (gamma 1); recipe of cbmeta_cifar.py."""

from . import cbmeta_cifar
from . import default


def get_config(arg: str = ""):
  c = cbmeta_cifar.get_config()
  c.loss.name = "focal"
  c.loss.focal_gamma = 1.0
  return default.apply_args(c, arg)
