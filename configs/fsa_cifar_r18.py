"""FSA (Chu et al.) on CIFAR-10-LT IF 100 with the CIFAR ResNet-18 (paper Table 1;
CIFAR-100-LT: Table 2).

Same recipe as ``fsa_cifar.py`` (300-epoch CE phase I; classifier fine-tuning at lr 1e-3 for 6,400
iterations, N_a = N_f = 3, h_r = 0.9). Other imbalance factors: --config.dataset.imbalance=200;
CIFAR-100-LT: --config.dataset.name=cifar100.
"""

from . import default
from . import fsa_cifar


def get_config(arg: str = ""):
  c = fsa_cifar.fsa_recipe(default.get_config())
  c.model.name = "resnet18"
  return default.apply_args(c, arg)
