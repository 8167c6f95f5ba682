"""Learning to re-weight (Ren et al. 2018) on CIFAR-10-LT IF 100 with the MW-Net recipe."""

from . import default
from . import mwnet_cifar


def get_config(arg: str = ""):
  c = mwnet_cifar.get_config()
  c.method = "l2rw"
  return default.apply_args(c, arg)
