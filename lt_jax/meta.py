"""The bilevel core shared by every meta method: one SGD lookahead and its hypergradient.

MFM (eqs. 5-7), Jamal et al. (alg. 1), MW-Net and L2RW all take the same step. With w the network
parameters, h what the method learns (per-sample eps, the V-net parameters, the modulator phi),
alpha the lookahead learning rate (the main schedule's lr at the same step) and eta the meta rate:

  w_hat(h) = w - alpha * grad_w L_train(w, h)        plain SGD, no momentum, no weight decay
  h_new    = h - eta * grad_h L_meta(w_hat(h))        second order: through grad_w L_train
  w_new    = optimiser step on L_train(w, stop_gradient(h_new))

This module computes the first two lines (``lookahead``, ``hypergradient``); each method writes
only its two losses and its own updates of h and w.

BatchNorm. The lookahead pass (L_train at w) and the meta pass (L_meta at w_hat) run the flax model
in train mode, normalising with their own batch's statistics: the losses handed to this module are
closures that call ``model.apply(..., train=True, mutable=['batch_stats'])`` and either drop the
returned running statistics or return them through ``aux`` (``has_aux=True``) for inspection. Only
the real update's forward pass keeps its statistics, once per iteration, as the peers do.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any


def lookahead_params(params: PyTree, grads: PyTree, lr) -> PyTree:
  """w_hat = w - alpha * g on every leaf (plain SGD); each leaf keeps its dtype."""
  return jax.tree.map(lambda w, g: w - jnp.asarray(lr, w.dtype) * g, params, grads)


def lookahead(inner_loss: Callable, params: PyTree, hparams: PyTree, lr, *, has_aux: bool = False):
  """w_hat(h) = w - alpha * grad_w L_train(w, h), differentiable in h.

  Args:
    inner_loss: ``L_train(w, h)``, a scalar (or ``(scalar, aux)`` when ``has_aux``).
    params: w, a pytree of floating arrays.
    hparams: h, any pytree ``inner_loss`` takes.
    lr: alpha, a Python or traced scalar.
    has_aux: whether ``inner_loss`` returns ``(scalar, aux)``.

  Returns:
    w_hat, or ``(w_hat, aux)`` when ``has_aux``.
  """
  grads = jax.grad(inner_loss, has_aux=has_aux)(params, hparams)
  if has_aux:
    grads, aux = grads
    return lookahead_params(params, grads, lr), aux
  return lookahead_params(params, grads, lr)


def hypergradient(inner_loss: Callable, outer_loss: Callable, params: PyTree, hparams: PyTree,
                  lr, *, has_aux: bool = False):
  """L_meta(w_hat(h)) and its gradient in h, through the lookahead (reverse over reverse).

  w_hat(h) = w - alpha * grad_w L_train(w, h); returns L_meta(w_hat(h)) and
  grad_h L_meta(w_hat(h)) = -alpha * (d^2 L_train / dh dw) grad_w L_meta(w_hat). Pure and jittable
  with ``lr`` traced, so the lookahead can follow the main schedule without retracing.

  Args:
    inner_loss: ``L_train(w, h) -> scalar`` (``(scalar, aux)`` when ``has_aux``).
    outer_loss: ``L_meta(w) -> scalar`` (``(scalar, aux)`` when ``has_aux``), evaluated at w_hat.
    params: w, a pytree of floating arrays (not differentiated).
    hparams: h, a pytree of floating arrays.
    lr: alpha, a Python or traced scalar.
    has_aux: whether both losses return ``(scalar, aux)``.

  Returns:
    ``(outer_value, grad_hparams)``, or ``((outer_value, (inner_aux, outer_aux)), grad_hparams)``
    when ``has_aux``; ``grad_hparams`` has the structure and dtypes of ``hparams`` (float32 h
    gives a float32 gradient even when w and the losses are float64).
  """
  def meta_objective(h):
    if has_aux:
      w_hat, inner_aux = lookahead(inner_loss, params, h, lr, has_aux=True)
      value, outer_aux = outer_loss(w_hat)
      return value, (inner_aux, outer_aux)
    return outer_loss(lookahead(inner_loss, params, h, lr))

  return jax.value_and_grad(meta_objective, has_aux=has_aux)(hparams)
