"""MFM on Fashion-MNIST-LT with ResNet-32 modulating ResBlock3: the 'F' runs of MFM Table 3.

MFM line 193: "We train ResNet-32 with the same settings in Section 4.1": the CIFAR recipe, here
that of configs/mfm_cifar_dev.py (Table 3's C->C equals Table 1's "Ours (development)", so the C
side runs with development meta data and the F side does the same): lr 0.1, batch 100, wd 5e-4,
200 epochs, lr x0.1 at 160 and 180, pad 4 + crop + flip (App. B, line 313), 20 development
images per class (min(20, n_c)), modulator hidden 100 / fixed lr 1e-3 at block3, IF 200 (the
source IF). A modulator learned here fits a CIFAR-10 ResNet-32 run and back (10 classes, 64
block3 channels). Channel statistics come from the Fashion-MNIST images (one channel); the CIFAR
constants do not apply.
"""

from . import default
from . import mfm_cifar_dev


def get_config(arg: str = ""):
  c = mfm_cifar_dev.get_config()
  c.dataset.name = "fashion_mnist"
  c.dataset.imbalance = 200.0
  c.augment.mean, c.augment.std = (), ()  # from the training images (grayscale)
  return default.apply_args(c, arg)
