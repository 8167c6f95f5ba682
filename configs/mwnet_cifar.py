"""MW-Net (Shu et al. 2019) on CIFAR-10-LT IF 100, the class-imbalance repo's recipe.

ResNet-32, batch 100 + meta batch 100 (the whole 10-per-class meta set, carved before imbalancing:
protocol mwnet, n_max = 4990), 100 epochs, SGD lr 0.1 nesterov momentum 0.9 wd 5e-4, lr x0.1 from
0-indexed epochs 79 and 89 (the repo's `epoch + 1 >= 80`), reflect pad 4 + crop + flip. V-net
1-100-1, SGD lr 1e-5 nesterov momentum 0.9 wd 5e-4.
"""

from . import default


def mwnet_recipe(c):
  """The MW-Net / Jamal et al. data, augmentation and optimiser settings shared by meta configs."""
  c.dataset.protocol = "mwnet"
  c.meta.strategy = "meta"
  c.meta.per_class = 10
  c.meta.batch_size = 100
  c.train.batch_size = 100
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = 0
  c.augment.pad_mode = "reflect"
  c.augment.mean = (0.4914, 0.4824, 0.4467)
  c.augment.std = (0.2471, 0.2435, 0.2616)
  return c


def get_config(arg: str = ""):
  c = mwnet_recipe(default.get_config())
  c.method = "mwnet"
  c.train.epochs = 100
  c.optim.decay_epochs = (79, 89)
  c.optim.decay_factor = 0.1
  return default.apply_args(c, arg)
