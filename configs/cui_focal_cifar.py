"""Focal loss as Cui et al. 2019 run it (sigmoid-based) on CIFAR-10-LT IF 100: the rows that quote
their focal numbers (Jamal et al.'s "Focal loss [34]", MFM Table 1 "Focal").

Cui et al.'s loss: sum over the C one-vs-all sigmoids of (1 - p_t)^gamma BCE, the batch's sum divided
by B (``loss.name='sigmoid_focal'``), the classifier bias initialised at -log(C - 1). gamma 1.0:
their CIFAR script's value (``cifar_im_trainval_cb.sh`` GAMMA=1.0, also its default); their paper
reports the best of a small gamma search per setting, which the quoting slides do not give.
Recipe: their CIFAR code's, the same as configs/ce_cifar.py (ResNet-32, batch 128, SGD lr 0.1
momentum 0.9, wd 2e-4, 5 warm-up epochs, lr x0.01 at 160 and again at 180, 200 epochs, pad 4 +
crop + flip). As their sigmoid / focal runs, the classifier's bias is left out of the weight decay
(``optim.no_decay=('classifier/bias',)``; their softmax runs, e.g. CB-CE, decay it).
"""

from . import ce_cifar
from . import default


def cui_recipe(c):
  """Cui et al.'s sigmoid focal loss (gamma 1.0, bias init -log(C - 1), no weight decay on the
  last bias) on the CIFAR recipe."""
  c.loss.name = "sigmoid_focal"
  c.loss.focal_gamma = 1.0
  c.loss.cb_reduction = "batch"
  c.model.sigmoid_bias_init = True
  c.optim.no_decay = ("classifier/bias",)  # their code: "no regularization ... for last layer's bias"
  return c


def get_config(arg: str = ""):
  c = cui_recipe(ce_cifar.get_config())
  c.loss.reweight = "none"
  return default.apply_args(c, arg)
