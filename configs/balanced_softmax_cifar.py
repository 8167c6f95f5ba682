"""Balanced softmax (Ren et al., NeurIPS 2020) on CIFAR-10-LT, IF 100, ResNet-32.

CE on z + log n (n the long-tailed training class counts); recipe of ce_cifar.py (not Ren et
al.'s own schedule), so the row is comparable with the others here.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.method = "erm"
  c.loss.name = "balanced_softmax"
  return default.apply_args(c, arg)
