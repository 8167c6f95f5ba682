"""Classifier re-training (cRT, Kang et al. 2020) on CIFAR-10-LT IF 100, ResNet-32.

Phase I: the CE baseline of ``ce_cifar.py`` (trained first in WORKDIR/phase1 unless
--config.decouple.phase1_workdir names a finished run). Phase II: the classifier is re-initialised
and trained on class-balanced batches of frozen features (eval-mode BatchNorm), SGD momentum 0.9,
wd 5e-4, lr 0.05 cosine, 1,000 iterations of batch 128 (~10 epochs).
"""

from . import ce_cifar
from . import default


def decouple_recipe(c, method: str):
  c.method = method
  c.decouple.phase1_method = "erm"
  return c


def get_config(arg: str = ""):
  c = decouple_recipe(ce_cifar.get_config(), "crt")
  c.decouple.reinit = True
  return default.apply_args(c, arg)
