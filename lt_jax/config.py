"""Validation of the fields the training loop reads, with errors that name the field.

The data fields (``dataset.*``, ``meta.*``) are checked where they are read, in ``lt_jax.data``;
model and loss names in ``lt_jax.models`` and ``lt_jax.losses``.
"""

import ml_collections

from lt_jax import methods

CHOICES = {
    "augment.pad_mode": ("constant", "reflect"),
    "model.classifier": ("linear", "cosine"),
    "loss.name": ("ce", "focal", "ldam"),
    "loss.reweight": ("none", "cb"),
    "cbmeta.lookahead_reduction": ("sum", "mean"),
}
POSITIVE = ("train.batch_size", "train.epochs", "train.eval_every_epochs",
            "train.checkpoint_every_epochs", "train.keep_checkpoints", "train.eval_batch_size",
            "meta.batch_size", "replicas")
NON_NEGATIVE = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.warmup_epochs",
                "optim.decay_factor", "augment.pad")


def field(config: ml_collections.ConfigDict, name: str):
  """``config.a.b`` for ``name='a.b'``."""
  value = config
  for part in name.split("."):
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the first bad field and what was expected; returns the config."""
  methods.get_method(config.method)
  for name, allowed in CHOICES.items():
    if field(config, name) not in allowed:
      raise ValueError(f"{name}={field(config, name)!r} is not allowed; expected one of {list(allowed)}")
  for name in POSITIVE:
    if not field(config, name) >= 1:
      raise ValueError(f"{name}={field(config, name)!r} must be a positive integer")
  for name in NON_NEGATIVE:
    if not field(config, name) >= 0:
      raise ValueError(f"{name}={field(config, name)!r} must be >= 0")
  decays = list(config.optim.decay_epochs)
  if decays != sorted(decays):
    raise ValueError(f"optim.decay_epochs={tuple(decays)} must be increasing")
  if len(config.augment.mean) != len(config.augment.std):
    raise ValueError("augment.mean and augment.std must have the same length (or both be empty)")
  return config
