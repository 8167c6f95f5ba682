"""Training methods as ``Method`` records in one eagerly imported registry, ``METHODS``.

A one-phase method is a pure step plus optional hooks with defaults. A two-phase method (FSA, the
decoupled classifiers) has no step: it names its config group (``fsa`` / ``decouple``) and
builds a phase-II head on a frozen phase-I network (``lt_jax.two_phase`` fits it). Methods import
only the core, models, losses and data helpers, never the loop.
"""

import dataclasses
from typing import Any, Callable

from lt_jax.methods import bbn
from lt_jax.methods import decouple
from lt_jax.methods import erm
from lt_jax.methods import fsa
from lt_jax.methods import mfm
from lt_jax.methods import reweight


def _no_hparams(rng, variables, ctx) -> dict:
  del rng, variables, ctx
  return {}


def _one_mode(epoch, ctx) -> None:
  del epoch, ctx


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method.

  train_step: (state, batch, ctx, mode) -> (state, metrics), pure. ``batch`` holds ``images``
    (normalised, augmented), ``labels``, ``ids`` and, for meta methods, ``meta_images`` and
    ``meta_labels``; one per extra sampler as ``{name}_images`` etc.
  needs_meta_data: config -> whether the step reads the balanced meta batch.
  init_hparams: (rng, variables, ctx) -> what the method learns besides w ({} if nothing).
  mode: (epoch, ctx) -> a hashable static step variant (e.g. pre-training, then meta); each
    distinct mode compiles once.
  extra_batches: config -> {name: sampler} of more training batches (BBN's reversed batch).
  validate_config: config -> None, ValueError naming the field (called once, at load).
  finalize: (view, workdir) -> None, after training on process 0, once per replica (``view``:
    ``ctx``, ``state``, ``mean``, ``std``, ``test_images``, ``test_labels``, ``class_names``).
  phase2_group: the config group of a two-phase method; ``make_head(config, frozen) -> Head``
    builds its phase-II head (``lt_jax.methods.heads``).
  """
  name: str
  train_step: Callable | None = None
  needs_meta_data: Callable[[Any], bool] = lambda config: False
  init_hparams: Callable = _no_hparams
  mode: Callable = _one_mode
  extra_batches: Callable[[Any], dict] = lambda config: {}
  validate_config: Callable[[Any], None] = lambda config: None
  finalize: Callable | None = None
  phase2_group: str | None = None
  make_head: Callable | None = None

  @property
  def two_phase(self) -> bool:
    return self.phase2_group is not None


def _registry(*methods: Method) -> dict[str, Method]:
  return {m.name: m for m in methods}


_META = lambda config: True
METHODS = _registry(
    Method("erm", erm.train_step),
    Method("l2rw", reweight.l2rw_step, needs_meta_data=_META),
    Method("mwnet", reweight.mwnet_step, needs_meta_data=_META, init_hparams=reweight.mwnet_init),
    Method("cbmeta", reweight.cbmeta_step, needs_meta_data=_META, mode=reweight.cbmeta_mode),
    Method("mfm", mfm.train_step, needs_meta_data=mfm.needs_meta_data, init_hparams=mfm.init_hparams,
           mode=mfm.mode, validate_config=mfm.validate_config, finalize=mfm.finalize),
    Method("bbn", bbn.train_step, extra_batches=bbn.extra_batches,
           validate_config=bbn.validate_config),
    Method("fsa", phase2_group="fsa", make_head=fsa.make_head, validate_config=fsa.validate_config),
    *(Method(name, phase2_group="decouple", make_head=head, validate_config=decouple.validate_config)
      for name, head in decouple.HEADS.items()),
)


def get_method(name: str) -> Method:
  """The ``Method`` of ``config.method``; a ValueError naming the allowed ones otherwise."""
  if name not in METHODS:
    raise ValueError(f"config.method={name!r} is unknown; expected one of {sorted(METHODS)}")
  return METHODS[name]
