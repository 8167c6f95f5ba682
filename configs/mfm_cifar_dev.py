"""MFM with 'development' meta data: 20 images per class (n_min when smaller) copied from the LT
training set (MFM Table 1, 19.72% at IF 100). ``sweep`` lists the Table 2 ablation rows.
"""

from . import default
from . import mfm_cifar


def get_config(arg: str = ""):
  c = mfm_cifar.get_config()
  c.dataset.protocol = "ldam"
  c.meta.strategy = "development"
  c.meta.per_class = 20
  return default.apply_args(c, arg)


def sweep(add):
  """MFM Table 2 (C10 IF 100): modulated block, beta := 0, gamma := 1."""
  for points in (("block1",), ("block2",), ("block3",), ("block1", "block2", "block3")):
    add(**{"mfm.points": points})
  add(**{"mfm.zero_beta": True})
  add(**{"mfm.unit_gamma": True})
