"""Class-balanced focal loss (Cui et al. 2019) on CIFAR-10-LT IF 100: the rows that quote their
CB-focal numbers (Jamal et al.'s "Class-balanced focal Loss [7]", MFM Table 1 "CB").

configs/cui_focal_cifar.py (sigmoid focal, gamma 1.0, bias init -log(C - 1), the batch's sum / B,
no weight decay on the classifier bias)
with each sample's loss times w_y = (1 - beta) / (1 - beta^{n_y}), beta 0.9999, normalised to sum
to C, from epoch 0 (their code's ``weights``, ``alpha * loss``).
"""

from . import cui_focal_cifar
from . import default


def get_config(arg: str = ""):
  c = cui_focal_cifar.get_config()
  c.loss.reweight = "cb"
  c.loss.cb_beta = 0.9999
  c.loss.drw_epoch = -1
  return default.apply_args(c, arg)
