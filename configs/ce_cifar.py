"""Cross-entropy baseline on CIFAR-10-LT, IF 100 (LDAM-DRW repo recipe, MFM Table 1 'BaseModel').

ResNet-32, batch 128, 200 epochs, SGD lr 0.1 momentum 0.9, wd 2e-4, 5 warm-up epochs, lr x0.01
at epochs 160 and 180, zero pad 4 + crop + flip; LT subset by the LDAM protocol (n_max = 5000).
Shared JPEG copy: --config.dataset.source=folder --config.dataset.path=PATH/cifar10-jpeg.zip
"""

from . import default


def get_config(arg: str = ""):
  c = default.get_config()
  c.method = "erm"
  c.loss.name = "ce"
  c.augment.mean = (0.4914, 0.4822, 0.4465)
  c.augment.std = (0.2023, 0.1994, 0.2010)
  return default.apply_args(c, arg)
