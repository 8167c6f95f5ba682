"""Post-hoc logit adjustment (Menon et al., ICLR 2021) on CIFAR-10-LT IF 100, ResNet-32.

Phase I: the CE baseline of ``ce_cifar.py`` (trained first in WORKDIR/phase1 unless
--config.decouple.phase1_workdir names a finished run, of any one-phase method with a linear
classifier). Phase II: no training; test logits z - tau log pi with tau = 1 (pi the training class
prior), folded into the classifier's bias; --config.decouple.la_tau=T.
"""

from . import ce_cifar
from . import crt_cifar
from . import default


def get_config(arg: str = ""):
  c = crt_cifar.decouple_recipe(ce_cifar.get_config(), "posthoc_la")
  c.decouple.la_tau = 1.0
  c.decouple.steps = 0
  return default.apply_args(c, arg)
