"""MFM with 'development' meta data: 20 images per class (n_min when smaller) copied from the LT
training set (MFM Table 1, 19.72% at IF 100). ``sweep`` lists the Table 2 ablation rows.

"20 samples (or the number of the least frequent class when it is less than 20) per class" (MFM
line 129) is read per class, min(20, n_c) (``meta.development='per_class'``); ``'equal'`` gives
every class min(20, n_min) (docs/methods.md). The two differ only on CIFAR-100 at IF 100 / 50.
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
