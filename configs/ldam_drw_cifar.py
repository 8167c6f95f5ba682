"""LDAM-DRW (Cao et al. 2019): LDAM loss (max_m 0.5, s 30) on a cosine classifier, class-balanced
weights deferred to epoch 160; recipe of ce_cifar.py.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.loss.name = "ldam"
  c.loss.ldam_max_m = 0.5
  c.loss.ldam_s = 30.0
  c.model.classifier = "cosine"
  c.loss.reweight = "cb"
  c.loss.drw_epoch = 160
  return default.apply_args(c, arg)
