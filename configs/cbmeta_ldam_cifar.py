"""Class-balanced meta re-weighting with the LDAM base loss (max_m 0.5, s 30, cosine classifier)."""

from . import cbmeta_cifar
from . import default


def get_config(arg: str = ""):
  c = cbmeta_cifar.get_config()
  c.loss.name = "ldam"
  c.model.classifier = "cosine"
  return default.apply_args(c, arg)
