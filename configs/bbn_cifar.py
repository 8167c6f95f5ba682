"""BBN (Zhou et al., CVPR 2020) on CIFAR-10-LT, IF 100: bilateral-branch ResNet-32, cumulative learning.

The BBN paper / official code's CIFAR recipe as best we know it (configs/cifar10.yaml of
Megvii-Nanjing/BBN): ResNet-32 whose two branches own only the last residual block, batch 128
(uniform sampler) + 128 (reversed sampler), 200 epochs, SGD lr 0.1 momentum 0.9 wd 2e-4, 5 warm-up
epochs, lr x0.01 at epochs 120 and 160, pad 4 + crop + flip; alpha = 1 - (T / 200)^2, features
mixed as 2 [alpha f_c, (1 - alpha) f_r]; test with both branches at alpha = 0.5.
LT subset by the LDAM protocol (n_max = 5000), as every CIFAR row here.
"""

from . import ce_cifar
from . import default


def get_config(arg: str = ""):
  c = ce_cifar.get_config()
  c.method = "bbn"
  c.model.name = "bbn_resnet32"
  c.model.bbn_branch_blocks = 1
  c.model.bbn_mix_scale = 2.0
  c.dataset.sampler = "instance"  # the conventional branch; the re-balancing one is always reversed
  c.loss.name = "ce"
  c.train.epochs = 200
  c.train.batch_size = 128
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 2e-4
  c.optim.warmup_epochs = 5
  c.optim.decay_epochs = (120, 160)
  c.optim.decay_factor = 0.01
  return default.apply_args(c, arg)
