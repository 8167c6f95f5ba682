"""FSA (Chu et al.) on CIFAR-10-LT IF 100 with ResNet-32: CE phase I, then FC fine-tuning.

Phase I (when ``fsa.phase1_workdir`` is empty it runs first in WORKDIR/phase1): the paper's plain
training, SGD lr 0.1 momentum 0.9, wd 2e-4, batch 128, 300 epochs, lr x0.1 every 150 epochs, zero
pad 4 + crop + flip. Phase II: classifier only, fixed lr 1e-3, 6,400 iterations, batch 128,
N_a = N_f = 3, h_r = 0.9, tau_s = 0.8, tau_g = 0.2, augmentation after the last stage, CAMs of
Eq. (1) from the phase-I classifier on the fixed training features (``fsa.cam='paper'``).
To start from an existing baseline: --config.fsa.phase1_workdir=runs/ce_cifar (e.g. configs/ce_cifar.py).
"""

from . import default


def fsa_recipe(c):
  """The paper's phase I (plain CE) and phase II settings on CIFAR-LT."""
  c.method = "fsa"
  c.fsa.phase1_method = "erm"
  c.loss.name = "ce"
  c.augment.mean = (0.4914, 0.4822, 0.4465)
  c.augment.std = (0.2023, 0.1994, 0.2010)
  c.train.epochs = 300
  c.optim.lr = 0.1
  c.optim.warmup_epochs = 0
  c.optim.decay_epochs = (150,)
  c.optim.decay_factor = 0.1
  c.fsa.steps = 6400
  c.fsa.batch_size = 128
  c.fsa.lr = 1e-3
  c.fsa.num_augment = 3
  c.fsa.num_confusing = 3
  return c


def get_config(arg: str = ""):
  c = fsa_recipe(default.get_config())
  c.model.name = "resnet32"
  return default.apply_args(c, arg)
