"""Class-balanced meta re-weighting (Jamal et al. 2020) + CE on CIFAR-10-LT IF 100, official recipe.

ResNet-32, batch 100, 200 epochs of which 160 plain CE, then w_y (beta 0.9999) + eps (tau 0.01, sum
lookahead loss, no clipping) for 40; SGD lr 0.1 nesterov wd 5e-4, lr x0.01 at 160 and 180; meta set
10 per class carved first (protocol mwnet).
"""

from . import default
from . import mwnet_cifar


def get_config(arg: str = ""):
  c = mwnet_cifar.mwnet_recipe(default.get_config())
  c.method = "cbmeta"
  c.train.epochs = 200
  c.optim.decay_epochs = (160, 180)
  c.optim.decay_factor = 0.01
  c.loss.cb_beta = 0.9999
  c.cbmeta.start_epoch = 160
  c.cbmeta.tau = 0.01
  c.cbmeta.lookahead_reduction = "sum"
  c.cbmeta.clip_weights = False
  return default.apply_args(c, arg)
