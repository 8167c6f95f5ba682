"""``validate(config)``: every check of a run in one place, called once at load, with errors that
name the field and what is allowed.

The data fields' checks live beside the data (``lt_jax.data.check_config``), each method's in its
``Method.validate_config``; this module calls them all.
"""

import copy
import json

import ml_collections

from lt_jax import data
from lt_jax import files
from lt_jax import losses
from lt_jax import methods
from lt_jax import models
from lt_jax.data import samplers
from lt_jax.data import split_lists
from lt_jax.methods import reweight

CHOICES = {
    "augment.pad_mode": ("constant", "reflect"),
    "model.classifier": ("linear", "cosine"),
    "loss.name": losses.LOSS_NAMES,
    "loss.reweight": losses.REWEIGHTS,
    "loss.cb_reduction": losses.CB_REDUCTIONS,
    "cbmeta.lookahead_reduction": ("sum", "mean"),
    "cbmeta.meta_loss": reweight.META_LOSSES,
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
  """Every check a run needs, once, before any data is read: the generic fields, the data fields,
  the feed, the method's own. Raises ValueError naming the first bad field and what is allowed;
  returns the config."""
  method = methods.get_method(config.method)
  for name, allowed in CHOICES.items():
    if field(config, name) not in allowed:
      raise ValueError(f"{name}={field(config, name)!r} is not allowed; expected one of {list(allowed)}")
  for name in POSITIVE:
    if not field(config, name) >= 1:
      raise ValueError(f"{name}={field(config, name)!r} must be a positive integer")
  for name in NON_NEGATIVE:
    if not field(config, name) >= 0:
      raise ValueError(f"{name}={field(config, name)!r} must be >= 0")
  if config.train.get("log_every_steps", -1) < -1:
    raise ValueError(f"train.log_every_steps={config.train.log_every_steps} must be >= -1 "
                     "(-1 = every 100 steps when stderr is not a terminal, 0 = off)")
  decays = list(config.optim.decay_epochs)
  if decays != sorted(decays):
    raise ValueError(f"optim.decay_epochs={tuple(decays)} must be increasing")
  if len(config.augment.mean) != len(config.augment.std):
    raise ValueError("augment.mean and augment.std must have the same length (or both be empty)")
  models.validate_pretrained(config.model)
  if config.model.get("sigmoid_bias_init") and config.model.classifier != "linear":
    raise ValueError(f"model.sigmoid_bias_init=True needs model.classifier='linear' (a bias to set); "
                     f"got {config.model.classifier!r}")
  data.check_config(config)
  if method.needs_meta_data(config) and config.meta.strategy == "none":
    raise ValueError(f"config.method={config.method!r} needs balanced meta data: set meta.strategy "
                     "to 'meta' or 'development' (it is 'none')")
  if config.loader.stream:
    validate_streaming(config, method)
  if method.two_phase:
    validate_phase2(config, method.phase2_group)
  method.validate_config(config)
  return config


def validate_streaming(config: ml_collections.ConfigDict, method: methods.Method) -> None:
  """What ``loader.stream=True`` cannot run, each with the reason and the way out."""
  source = config.dataset.source
  if source not in split_lists.SOURCES:
    raise ValueError(f"loader.stream=True needs a streaming dataset.source (one of "
                     f"{list(split_lists.SOURCES)}); got dataset.source={source!r}. Set "
                     "loader.stream=False to load it in memory")
  if config.replicas != 1:
    raise ValueError(f"replicas={config.replicas}: loader.stream=True trains one model (the grain "
                     "loader feeds one batch order); run the seeds as separate jobs")
  if config.dataset.sampler != "instance":
    raise ValueError(f"dataset.sampler={config.dataset.sampler!r} is not streamed: the grain "
                     "loader draws instance-balanced batches; use dataset.sampler='instance' or "
                     "loader.stream=False")
  if method.extra_batches(config):
    raise ValueError(f"config.method={config.method!r} needs extra batches from other samplers, "
                     "which the streaming loader does not draw; set loader.stream=False")
  if len(config.augment.mean) != 3 or len(config.augment.std) != 3:
    raise ValueError(f"loader.stream=True needs augment.mean and augment.std (3 values each, e.g. "
                     f"the ImageNet constants; channel statistics cannot come from a stream); got "
                     f"{len(config.augment.mean)} and {len(config.augment.std)}")


# --- Phase II of two-phase methods (FSA, decoupled classifiers) -------------------------------------

PHASE2_SCHEDULES = ("constant", "cosine")


def validate_phase2(config: ml_collections.ConfigDict, group: str) -> None:
  """The fields every phase-II group (``fsa``, ``decouple``) has; an inline phase I is validated too."""
  cfg = config[group]
  if config.replicas != 1:
    raise ValueError(f"replicas={config.replicas}: two-phase methods fit one head on one phase-I "
                     "network; run the seeds as separate jobs")
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
  if methods.get_method(cfg.phase1_method).two_phase:
    raise ValueError(f"{group}.phase1_method={cfg.phase1_method!r} is itself a two-phase method; "
                     "expected a one-phase method such as 'erm', 'mwnet', 'cbmeta' or 'mfm'")
  if not cfg.phase1_workdir:
    phase1 = copy.deepcopy(config)
    phase1.method = cfg.phase1_method
    validate(phase1)


# --- Re-runs of a workdir ---------------------------------------------------------------------------

CONFIG_FILE = "config.json"
# Fields a re-run may change without changing what the run computes (cadence, outputs, resources).
SAFE_TO_CHANGE = ("train.epochs", "train.eval_every_epochs", "train.checkpoint_every_epochs",
                  "train.keep_checkpoints", "train.eval_batch_size", "train.plots",
                  "train.steps_per_call", "loader.workers", "loader.prefetch", "dataset.data_dir",
                  "mfm.tsne_samples", "fsa.steps", "decouple.steps", "train.log_every_steps")


def flat(tree: dict, prefix: str = "") -> dict:
  """{'a.b': value} of a nested dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def changes_from_saved(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """{field: (saved, now)} of the safe fields a re-run of ``workdir`` changes; ValueError listing
  every field that would change the result. Fields the saved run did not have (added to the code
  since) are not compared. A workdir without ``config.json`` is a new run: {}."""
  path = files.join(workdir, CONFIG_FILE)
  if not files.exists(path):
    return {}
  saved = flat(files.read_json(path, "the config of an earlier run"))
  now = flat(json.loads(json.dumps(config.to_dict())))
  changed = {k: (saved[k], now[k]) for k in now if k in saved and saved[k] != now[k]}
  refused = sorted(k for k in changed if k not in SAFE_TO_CHANGE)
  if refused:
    listed = "; ".join(f"{k}: {changed[k][0]!r} there, {changed[k][1]!r} now" for k in refused)
    raise ValueError(f"{workdir} holds a run with another config ({listed}). Resuming it would mix "
                     "two settings: use a new --workdir, or the saved values to resume. Safe to "
                     f"change on a re-run: {', '.join(SAFE_TO_CHANGE)}")
  return changed
