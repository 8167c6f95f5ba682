"""MW-Net's weighting network V_Theta (Shu et al. 2019): per-sample loss l_i -> weight v_i in (0, 1).

v_i = sigmoid(W_2 relu(W_1 l_i + b_1) + b_2), a 1 -> hidden (100) -> 1 MLP with PyTorch nn.Linear's
default init (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))), as the official code.
Parameters ``Dense_0``, ``Dense_1``; trained by ``lt_jax.methods.reweight`` (MW-Net).
"""

import flax.linen as nn

from lt_jax.models import layers


class WeightNet(nn.Module):
  """V_Theta: per-sample loss l_i -> weight v_i in (0, 1) (1 -> hidden -> 1, ReLU, sigmoid)."""
  hidden: int = 100

  @nn.compact
  def __call__(self, values):
    init = layers.torch_uniform_init
    h = nn.Dense(self.hidden, kernel_init=init(1), bias_init=init(1))(values[:, None])
    h = nn.Dense(1, kernel_init=init(self.hidden), bias_init=init(self.hidden))(nn.relu(h))
    return nn.sigmoid(h[:, 0])
