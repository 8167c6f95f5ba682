"""MFM on Fashion-MNIST-LT with ResNet-32 modulating ResBlock3: the 'F' runs of MFM Table 3.

Table 3 learns the modulator at IF 200 on a source set (F or C) with ResNet-32, then freezes it and
trains on the target set at IF 200/100/50/10. The paper names only the network for F; the rest is
the Table 6 Fashion-MNIST recipe (configs/mfm_fmnist.py: development meta data 10 per class, lr
0.01, no augmentation, 100 epochs with x0.1 at 80 and 90) with the CIFAR modulator (block3, hidden
100), so a modulator learned here fits a CIFAR-10 ResNet-32 run and back (same number of classes
and block3 channels). Our reading, not the paper's recipe.
"""

from . import default
from . import mfm_fmnist


def get_config(arg: str = ""):
  c = mfm_fmnist.get_config()
  c.dataset.imbalance = 200.0
  c.model.name = "resnet32"
  c.mfm.points = ("block3",)
  c.mfm.hidden = 100
  return default.apply_args(c, arg)
