"""Logit-adjusted loss (Menon et al., ICLR 2021) on CIFAR-10-LT, IF 100, ResNet-32.

CE on z + tau log pi with tau = 1 (pi the long-tailed training prior); --config.loss.la_tau=T.
Recipe of ce_cifar.py (LDAM-DRW's 200 epochs) so the row is comparable with the others here, not
Menon et al.'s own longer CIFAR schedule.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.method = "erm"
  c.loss.name = "logit_adjust"
  c.loss.la_tau = 1.0
  return default.apply_args(c, arg)
