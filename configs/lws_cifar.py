"""Learnable weight scaling (LWS, Kang et al. 2020) on CIFAR-10-LT IF 100, ResNet-32.

Phase I: the CE baseline of ``ce_cifar.py`` (or --config.decouple.phase1_workdir=DIR). Phase II:
per-class scales f_c on the frozen classifier's logits, learned on class-balanced batches of
frozen features, SGD momentum 0.9, lr 0.05 cosine, 1,000 iterations of batch 128, no weight decay.
"""

from . import ce_cifar
from . import crt_cifar
from . import default


def get_config(arg: str = ""):
  c = crt_cifar.decouple_recipe(ce_cifar.get_config(), "lws")
  c.decouple.weight_decay = 0.0
  return default.apply_args(c, arg)
