"""Offline quick start: long-tailed handwritten digits (scikit-learn's bundled 8x8 images).

IF 10 over ~130 training images per class, a small CIFAR-style ResNet, 30 epochs of cross-entropy;
under three minutes on two CPU cores. Prints the overall error and per-class recall at the end.
Try ``--config.method=mfm --config.meta.strategy=development`` for the meta feature modulator.
"""

from . import default


def get_config(arg: str = ""):
  c = default.get_config()
  c.dataset.name = "digits"
  c.dataset.source = "digits"
  c.dataset.imbalance = 10.0
  c.meta.per_class = 5
  c.meta.batch_size = 50
  c.model.name = "resnet8"
  c.model.width = 16
  c.train.batch_size = 64
  c.train.epochs = 30
  c.train.eval_every_epochs = 5
  c.optim.lr = 0.1
  c.optim.warmup_epochs = 2
  c.optim.decay_epochs = (20, 25)
  c.optim.decay_factor = 0.1
  c.augment.pad = 1
  c.mfm.hidden = 32
  c.mfm.tsne_samples = 300
  return default.apply_args(c, arg)
