"""tau-normalised classifier (Kang et al. 2020) on CIFAR-10-LT IF 100, ResNet-32.

Phase I: the CE baseline of ``ce_cifar.py`` (or --config.decouple.phase1_workdir=DIR). Phase II: no
training; each class's weight vector W_c becomes W_c / ||W_c||^tau with tau = 1
(--config.decouple.tau=0.7 etc.).
"""

from . import ce_cifar
from . import crt_cifar
from . import default


def get_config(arg: str = ""):
  c = crt_cifar.decouple_recipe(ce_cifar.get_config(), "tau_norm")
  c.decouple.tau = 1.0
  c.decouple.steps = 0
  return default.apply_args(c, arg)
