"""run(config, workdir): the one entry of a run. Validates the config once, before any data is read,
then trains a one-phase method (``train``) or runs a two-phase one (``two_phase``)."""

import ml_collections

from lt_jax import config as config_lib
from lt_jax import methods
from lt_jax import train
from lt_jax import two_phase


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates ``config`` in ``workdir`` (resuming there); returns the summary."""
  config_lib.validate(config)
  if methods.get_method(config.method).two_phase:
    return two_phase.run(config, workdir)
  return train.train_and_evaluate(config, workdir)
