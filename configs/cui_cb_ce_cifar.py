"""Class-balanced softmax cross-entropy (Cui et al. 2019) on CIFAR-10-LT IF 100: the rows that quote
their CB-CE numbers (Jamal et al.'s "Class-balanced cross-entropy loss [7]").

w_y = (1 - beta) / (1 - beta^{n_y}), beta 0.9999, normalised to sum to C, from epoch 0, reduced as
their code: sum_i w_{y_i} CE_i / B (TF's weighted softmax_cross_entropy), not LDAM's / sum_i w_{y_i}
(configs/cb_cifar.py), whose steps are ~5.8x larger at IF 100. Recipe of configs/ce_cifar.py.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.loss.reweight = "cb"
  c.loss.cb_beta = 0.9999
  c.loss.drw_epoch = -1
  c.loss.cb_reduction = "batch"
  return default.apply_args(c, arg)
