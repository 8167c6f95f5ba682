"""MFM on Fashion-MNIST-LT IF 1000 with the modified LeNet (MFM Table 6, modulating FC1: 22.32%).

Meta data: 10 per class copied from the training set (6 for the rarest class); lr 0.01; no
augmentation. The paper gives no epoch count or decay: 100 epochs with x0.1 at 80 and 90 is ours.
Needs the TFDS catalog dataset fashion_mnist (or --config.dataset.source=folder with a copy).
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
  c.train.batch_size = 100
  c.train.epochs = 100
  c.optim.lr = 0.01
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = 0
  c.optim.decay_epochs = (80, 90)
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
