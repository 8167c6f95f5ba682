"""Class-balanced cross-entropy (effective number, beta 0.9999, weights sum to C) from epoch 0.

Cui et al. 2019 as run by the LDAM-DRW repo ('Reweight'); recipe of ce_cifar.py.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.loss.reweight = "cb"
  c.loss.cb_beta = 0.9999
  c.loss.drw_epoch = -1
  return default.apply_args(c, arg)
