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


def lookahead(inner_loss: Callable, params: PyTree, hparams: PyTree, lr, *, has_aux: bool = False,
              axis_name: str | None = None):
  """w_hat(h) = w - alpha * grad_w L_train(w, h), differentiable in h.

  Args:
    inner_loss: ``L_train(w, h)``, a scalar (or ``(scalar, aux)`` when ``has_aux``).
    params: w, a pytree of floating arrays.
    hparams: h, any pytree ``inner_loss`` takes.
    lr: alpha, a Python or traced scalar.
    has_aux: whether ``inner_loss`` returns ``(scalar, aux)``.
    axis_name: inside ``shard_map``, the data-parallel axis: ``inner_loss`` is this device's share
      (its device mean is the global L_train) and the gradient is averaged over devices.

  Returns:
    w_hat, or ``(w_hat, aux)`` when ``has_aux``.
  """
  grads = jax.grad(inner_loss, has_aux=has_aux)(params, hparams)
  grads, aux = grads if has_aux else (grads, None)
  if axis_name:
    grads = jax.lax.pmean(grads, axis_name)
  w_hat = lookahead_params(params, grads, lr)
  return (w_hat, aux) if has_aux else w_hat


def hypergradient(inner_loss: Callable, outer_loss: Callable, params: PyTree, hparams: PyTree,
                  lr, *, has_aux: bool = False, axis_name: str | None = None,
                  per_device_hparams: bool = False):
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
    axis_name: inside ``shard_map`` (``check_vma=False``, pmap semantics), the data-parallel axis.
      Both losses are this device's share (their device means are the global losses); the
      lookahead uses the device-mean gradient and L_meta is the device mean, so the result is the
      hypergradient of the global objective: the device mean of the local partials for replicated
      h (phi, V-net), 1/D of the local partial for ``per_device_hparams``.
    per_device_hparams: h belongs to this device's samples only (per-sample eps of the local
      batch), so no other device's losses depend on it.

  Returns:
    ``(outer_value, grad_hparams)``, or ``((outer_value, (inner_aux, outer_aux)), grad_hparams)``
    when ``has_aux``; ``grad_hparams`` has the structure and dtypes of ``hparams`` (float32 h
    gives a float32 gradient even when w and the losses are float64).
  """
  def global_mean(value):
    return jax.lax.pmean(value, axis_name) if axis_name else value

  def meta_objective(h):
    if has_aux:
      w_hat, inner_aux = lookahead(inner_loss, params, h, lr, has_aux=True, axis_name=axis_name)
      value, outer_aux = outer_loss(w_hat)
      return global_mean(value), (inner_aux, outer_aux)
    return global_mean(outer_loss(lookahead(inner_loss, params, h, lr, axis_name=axis_name)))

  value, grads = jax.value_and_grad(meta_objective, has_aux=has_aux)(hparams)
  if axis_name and per_device_hparams:
    grads = jax.tree.map(lambda g: g / jax.lax.axis_size(axis_name), grads)
  elif axis_name:
    grads = jax.lax.pmean(grads, axis_name)
  return value, grads
