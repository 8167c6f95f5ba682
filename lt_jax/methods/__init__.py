"""Training methods, one module per family, all with the same three functions.

A method module defines:

* ``needs_meta_data(config) -> bool``: whether it reads the balanced meta batch (then
  ``meta.strategy`` must not be none);
* ``init_meta(rng, variables, ctx) -> meta``: the pytree it learns besides w ({} if nothing);
* ``phase(epoch, ctx) -> hashable``: a static per-epoch phase (e.g. pre-training, then meta
  phase); each distinct phase compiles once;
* ``train_step(state, batch, ctx, phase) -> (state, metrics)``: a pure step. ``batch`` holds
  ``images`` (normalised, augmented), ``labels``, ``ids`` (sample ids in the training set) and, for
  meta methods, ``meta_images`` and ``meta_labels``.

Optional hooks: ``extra_batches(config) -> {name: sampler}`` (more training batches from other
samplers, arriving as ``{name}_images``, ``{name}_labels``, ``{name}_ids``; BBN's reversed
batch) and ``validate_config(config)`` (method-specific checks, called by ``config.validate``).

A two-phase method (FSA, the decoupled classifiers) instead defines ``run(config, workdir) ->
summary``: it loads or trains its phase-I run and fine-tunes on it (``lt_jax.finetune``);
``lt_jax.main`` calls it in place of ``train.train_and_evaluate``.
"""

import importlib
import types

# config.method -> module under lt_jax.methods
METHODS = {
    "erm": "erm",
    "l2rw": "reweight",
    "mwnet": "reweight",
    "cbmeta": "reweight",
    "mfm": "mfm",
    "fsa": "fsa",
    "crt": "decouple",
    "tau_norm": "decouple",
    "lws": "decouple",
    "posthoc_la": "decouple",
    "bbn": "bbn",
}


def get_method(name: str) -> types.ModuleType:
  """The module implementing ``config.method``; a clear error for unknown or missing methods."""
  if name not in METHODS:
    raise ValueError(f"config.method={name!r} is unknown; expected one of {sorted(METHODS)}")
  try:
    module = importlib.import_module(f"lt_jax.methods.{METHODS[name]}")
  except ModuleNotFoundError as e:
    if e.name != f"lt_jax.methods.{METHODS[name]}":
      raise
    raise NotImplementedError(f"config.method={name!r} is not implemented yet") from e
  return module.for_method(name) if hasattr(module, "for_method") else module
