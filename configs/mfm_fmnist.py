"""MFM on Fashion-MNIST-LT IF 1000 with the modified LeNet (MFM Table 6, modulating FC1: 22.32%).

App. C.3 (MFM line 373): "The experimental settings are similar as that for CIFAR, except that no
data augmentation is adopted and the initial learning rate is 0.01": the CIFAR recipe of App. B
(line 313: SGD momentum 0.9, wd 5e-4, batch 100, 200 epochs, lr x0.1 at epochs 160 and 180) with
lr 0.01 and no augmentation. Meta data: "10 samples per class, other than the least frequency
class with 6 samples", copied from the training set (development, min(10, n_c)). Plain momentum
(no Nesterov): the paper names none; ours. Needs the TFDS catalog dataset fashion_mnist (or
--config.dataset.source=folder with a copy).
"""

from . import default


def get_config(arg: str = ""):
  c = default.get_config()
  c.method = "mfm"
  c.dataset.name = "fashion_mnist"
  c.dataset.imbalance = 1000.0
  c.meta.strategy = "development"
  c.meta.per_class = 10
  c.model.name = "lenet"
  c.mfm.points = ("fc1",)
  c.mfm.hidden = 100
  c.mfm.lr = 1e-3
  c.train.batch_size = 100
  c.train.epochs = 200
  c.optim.lr = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = 0
  c.optim.decay_epochs = (160, 180)
  c.optim.decay_factor = 0.1
  c.augment.crop = False
  c.augment.flip = False
  return default.apply_args(c, arg)


def sweep(add):
  """MFM Table 6: each modulated layer, all of them, and the two ablations."""
  for points in (("conv1",), ("conv2",), ("conv3",), ("fc1",), ("conv1", "conv2", "conv3", "fc1")):
    add(**{"mfm.points": points})
  add(**{"mfm.zero_beta": True})
  add(**{"mfm.unit_gamma": True})
