"""Validation of the fields the training loop reads, with errors that name the field.

The data fields (``dataset.*``, ``meta.*``) are checked where they are read, in ``lt_jax.data``;
model and loss names in ``lt_jax.models`` and ``lt_jax.losses``.
"""

import ml_collections

from lt_jax import methods
from lt_jax.data import samplers

CHOICES = {
    "augment.pad_mode": ("constant", "reflect"),
    "model.classifier": ("linear", "cosine"),
    "loss.name": ("ce", "focal", "ldam", "logit_adjust", "balanced_softmax"),
    "loss.reweight": ("none", "cb"),
    "cbmeta.lookahead_reduction": ("sum", "mean"),
    "dataset.sampler": samplers.SAMPLERS,
    "model.dtype": ("float32", "bfloat16"),
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
  method = methods.get_method(config.method)
  if hasattr(method, "validate_config"):
    method.validate_config(config)
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
  if config.method == "fsa":
    validate_fsa(config)
  if config.method in DECOUPLE_METHODS:
    validate_phase2(config, "decouple")
    if not config.decouple.tau >= 0:
      raise ValueError(f"decouple.tau={config.decouple.tau!r} must be >= 0")
    if not config.decouple.la_tau >= 0:
      raise ValueError(f"decouple.la_tau={config.decouple.la_tau!r} must be >= 0")
    if config.decouple.sampler not in DECOUPLE_SAMPLERS:
      raise ValueError(f"decouple.sampler={config.decouple.sampler!r} is not allowed; expected one of "
                       f"{list(DECOUPLE_SAMPLERS)}")
  return config


# --- Phase II methods (FSA, decoupled classifiers) --------------------------------------------------

PHASE2_SCHEDULES = ("constant", "cosine")
DECOUPLE_METHODS = ("crt", "tau_norm", "lws", "posthoc_la")
DECOUPLE_SAMPLERS = ("class_balanced", "instance")
FSA_CHOICES = {"fsa.mode": ("fsa", "balanced"), "fsa.confusion": ("paper", "transposed")}


def validate_phase2(config: ml_collections.ConfigDict, group: str) -> None:
  """The fields every phase-II group (``fsa``, ``decouple``) has."""
  cfg = config[group]
  for name in ("steps", "eval_every", "batch_size"):
    value = cfg[name]
    if not isinstance(value, int) or value < (0 if name == "steps" else 1):
      raise ValueError(f"{group}.{name}={value!r} must be a positive integer"
                       + (" (or 0: no training)" if name == "steps" else ""))
  if cfg.steps % cfg.eval_every:
    raise ValueError(f"{group}.eval_every={cfg.eval_every} must divide {group}.steps={cfg.steps}")
  for name in ("lr", "momentum", "weight_decay"):
    if not cfg[name] >= 0:
      raise ValueError(f"{group}.{name}={cfg[name]!r} must be >= 0")
  if cfg.schedule not in PHASE2_SCHEDULES:
    raise ValueError(f"{group}.schedule={cfg.schedule!r} is not allowed; expected one of "
                     f"{list(PHASE2_SCHEDULES)}")
  methods.get_method(cfg.phase1_method)


def validate_fsa(config: ml_collections.ConfigDict) -> None:
  """FSA's fields: thresholds 0 <= tau_g < tau_s <= 1, h_r in (0, 1), N_a, N_f >= 1, the batch."""
  validate_phase2(config, "fsa")
  cfg = config.fsa
  for name, allowed in FSA_CHOICES.items():
    if field(config, name) not in allowed:
      raise ValueError(f"{name}={field(config, name)!r} is not allowed; expected one of {list(allowed)}")
  if not 0 <= cfg.tau_g < cfg.tau_s <= 1:
    raise ValueError(f"fsa.tau_g={cfg.tau_g} and fsa.tau_s={cfg.tau_s}: need 0 <= tau_g < tau_s <= 1")
  if not 0 < cfg.head_ratio < 1:
    raise ValueError(f"fsa.head_ratio={cfg.head_ratio} (h_r) must be in (0, 1)")
  for name in ("num_augment", "num_confusing"):
    if not isinstance(cfg[name], int) or cfg[name] < 1:
      raise ValueError(f"fsa.{name}={cfg[name]!r} must be a positive integer")
  if cfg.batch_size < 2 * (1 + cfg.num_augment):
    raise ValueError(f"fsa.batch_size={cfg.batch_size} must be at least 2 (1 + fsa.num_augment) = "
                     f"{2 * (1 + cfg.num_augment)} (one tail sample with its N_a syntheses and as "
                     "many head samples)")
  if not isinstance(cfg.stage, int) or cfg.stage < -1 or cfg.stage == 0:
    raise ValueError(f"fsa.stage={cfg.stage!r} must be -1 (after the last stage) or a stage 1, 2, ...")
  if not config.model.name.startswith("resnet"):
    raise ValueError(f"method 'fsa' needs a ResNet (model.name={config.model.name!r}): CAMs need a "
                     "spatial feature map before global average pooling")
