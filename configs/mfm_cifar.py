"""Meta Feature Modulator on CIFAR-10-LT IF 100, 'meta' strategy (MFM Table 1, 19.83% error).

ResNet-32, batch 100, 200 epochs, SGD lr 0.1 momentum 0.9 wd 5e-4, lr x0.1 at epochs 160 and 180;
meta data 10 images per class kept out of training (protocol mwnet); the last stage (ResBlock3) is
modulated; modulator: one hidden layer of 100 units on the soft label, fixed lr 1e-3 (Adam; the
paper does not name the optimiser, its Eq. 6 is a plain step: --config.mfm.optimizer=sgd), gamma =
C softmax, beta free. Augmentation and normalisation follow the MW-Net code MFM builds on (reflect
pad, nesterov). ResBlock3 is read as the stage output after the residual add and ReLU;
--config.mfm.points="('block3_conv',)" is the last conv before it (docs/methods.md). The recipe,
line by line with the paper's words: experiments/paper_recipes/mfm.csv.
"""

from . import default
from . import mwnet_cifar


def get_config(arg: str = ""):
  c = mwnet_cifar.mwnet_recipe(default.get_config())
  c.method = "mfm"
  c.train.epochs = 200
  c.optim.decay_epochs = (160, 180)
  c.optim.decay_factor = 0.1
  c.mfm.points = ("block3",)
  c.mfm.hidden = 100
  c.mfm.lr = 1e-3
  return default.apply_args(c, arg)
