"""Meta Feature Modulator (MFM, Wang et al.): meta-learned per-sample channel scale and shift.

At the modulated points the training network computes f = f_k(gamma_i * g_k(x_i) + beta_i). The
(gamma_i, beta_i) come from phi: either the modulator network M_phi applied to the soft label of
the unmodulated network, or free per-sample vectors phi_i indexed by sample id. One iteration
(Algorithm 1, eqs. 5-7), all on the bilevel core:

  w_hat(phi) = w - alpha grad_w L_train(w, phi)          (modulated training loss, eq. 5)
  phi'       = phi - eta grad_phi L_meta(w_hat(phi))     (unmodulated network on meta data, eq. 6)
  w'         = optimiser step on L_train(w, phi')        (phi' held fixed, eq. 7)

Evaluation never modulates: the trained network is a plain classifier. The soft label is an input
to M_phi and is not differentiated through (stop_gradient). With ``mfm.load_modulator`` a modulator
saved by another run is applied frozen, without meta steps (MFM Table 3 transfer).
"""


import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lt_jax import files
from lt_jax import losses
from lt_jax import bilevel
from lt_jax import models
from lt_jax import train_state as ts
from lt_jax.data import augment
from lt_jax.models import modulator as modulator_lib

ARTIFACT_DIR = "modulator"
SPEC_KEYS = ("num_classes", "points", "hidden", "compressed_size", "variant")  # load must match all
CHOICES = {"optimizer": ("adam", "sgd"), "generator": ("network", "per_sample")}


def needs_meta_data(config):
  return not config.mfm.load_modulator


def validate_config(config) -> None:
  """ValueError naming the ``mfm.*`` field that cannot run (before any data is read)."""
  cfg = config.mfm
  for name, allowed in CHOICES.items():
    if cfg[name] not in allowed:
      raise ValueError(f"mfm.{name}={cfg[name]!r} is unknown; expected one of {list(allowed)}")
  available = models.get_model(config.model, num_classes=2).modulation_points()
  points = tuple(cfg.points)
  unknown = [p for p in points if p not in available]
  if not points or unknown:
    raise ValueError(f"mfm.points={points} names points {unknown} that model {config.model.name!r} "
                     f"does not have; expected a non-empty subset of {list(available)}")
  if cfg.load_modulator and cfg.generator != "network":
    raise ValueError(f"mfm.load_modulator needs mfm.generator='network' (got {cfg.generator!r}): "
                     "only a modulator network transfers to another run")


def point_channels(ctx) -> dict[str, int]:
  """{point: channels} of the modulated points (checked by ``validate_config``)."""
  available = ctx.model.modulation_points()
  return {p: available[p] for p in ctx.config.mfm.points}


def modulator_network(ctx) -> modulator_lib.Modulator:
  cfg = ctx.config.mfm
  return modulator_lib.Modulator(tuple(point_channels(ctx).items()), hidden=cfg.hidden,
                                 compressed_size=cfg.compressed_size)


def meta_optimizer(config) -> optax.GradientTransformation:
  """The optimiser of phi with its fixed learning rate eta."""
  return (optax.adam if config.mfm.optimizer == "adam" else optax.sgd)(config.mfm.lr)


def init_hparams(rng, variables, ctx):
  """phi (and its optimiser state): modulator parameters, a per-sample table, or a frozen load."""
  del variables
  cfg = ctx.config.mfm
  num_classes = len(ctx.class_counts)
  if cfg.load_modulator:
    return {"phi": load_modulator(cfg.load_modulator, ctx)}
  if cfg.generator == "per_sample":
    size = modulator_lib.output_size(point_channels(ctx))
    return {"phi": jnp.zeros((ctx.num_train, size), jnp.float32)}
  phi = modulator_network(ctx).init(rng, jnp.zeros((1, num_classes)))["params"]
  return {"phi": phi, "opt_state": meta_optimizer(ctx.config).init(phi)}


def mode(epoch, ctx):
  del epoch
  return "frozen" if ctx.config.mfm.load_modulator else "meta"


def modulation_for(phi, soft_labels, ids, ctx) -> dict:
  """{point: (gamma_i, beta_i)} for a batch from phi (network or per-sample table rows)."""
  cfg = ctx.config.mfm
  if cfg.generator == "per_sample" and not cfg.load_modulator:
    raw = phi[ids]
  else:
    raw = modulator_network(ctx).apply({"params": phi}, soft_labels)
  return modulator_lib.split_modulation(raw, point_channels(ctx), cfg.variant,
                                        zero_beta=cfg.zero_beta, unit_gamma=cfg.unit_gamma)


def train_step(state: ts.TrainState, batch, ctx: ts.Context, mode="meta"):
  """One MFM iteration (or, with a frozen modulator, a modulated plain step)."""
  model, images, labels, ids = ctx.model, batch["images"], batch["labels"], batch["ids"]
  per_sample_loss = losses.make_base_loss(ctx.config.loss, ctx.class_counts)
  class_weights = losses.class_weights_at(ctx.config.loss, ctx.class_counts, ts.epoch_of(state, ctx))

  def training_loss(params, modulation, batch_stats):
    logits, batch_stats = ts.forward(model, params, batch_stats, images, train=True, modulation=modulation)
    values, weights = per_sample_loss(logits, labels, class_weights)
    return losses.weighted_mean(values, weights, ctx.axis_name), (logits, batch_stats)

  unmodulated_logits, _ = ts.forward(model, state.params, state.batch_stats, images, train=True)
  soft_labels = jax.lax.stop_gradient(jax.nn.softmax(unmodulated_logits))
  phi, new_hparams, metrics = state.hparams["phi"], state.hparams, {}

  if mode == "meta":
    def inner_loss(params, phi):  # L_train(w, phi), statistics of this pass dropped
      return training_loss(params, modulation_for(phi, soft_labels, ids, ctx), state.batch_stats)[0]

    def outer_loss(params):  # L_meta(w_hat): unmodulated network, balanced meta batch
      logits, _ = ts.forward(model, params, state.batch_stats, batch["meta_images"], train=True)
      return jnp.mean(losses.cross_entropy(logits, batch["meta_labels"]))

    meta_loss, grad_phi = bilevel.hypergradient(inner_loss, outer_loss, state.params, phi,
                                             ctx.lr_fn(state.step), axis_name=ctx.axis_name)
    if ctx.config.mfm.generator == "per_sample":  # plain SGD; grad_phi is 0 outside the batch's rows
      phi = phi - ctx.config.mfm.lr * grad_phi
      new_hparams = {"phi": phi}
    else:
      updates, opt_state = meta_optimizer(ctx.config).update(grad_phi, state.hparams["opt_state"], phi)
      phi = optax.apply_updates(phi, updates)
      new_hparams = {"phi": phi, "opt_state": opt_state}
    metrics = {"meta_loss": meta_loss, "meta_grad_norm": optax.tree.norm(grad_phi)}

  modulation = jax.lax.stop_gradient(modulation_for(phi, soft_labels, ids, ctx))
  (loss, (logits, batch_stats)), grads = jax.value_and_grad(training_loss, has_aux=True)(
      state.params, modulation, state.batch_stats)
  gammas = [g for g, _ in modulation.values()]
  metrics.update(ts.classification_metrics(logits, labels, loss),
                 gamma_std=jnp.mean(jnp.stack([jnp.std(g, axis=-1).mean() for g in gammas])))
  return ts.apply_gradients(state, ctx, grads, batch_stats, hparams=new_hparams), metrics


# --- Transfer: the learned modulator as an artifact of the run -------------------------------------

def modulator_spec(ctx) -> dict:
  """What another run must match to reuse this modulator: input (C), output (points, in order),
  architecture (hidden, compressed_size) and variant (``SPEC_KEYS``)."""
  cfg = ctx.config.mfm
  return {"num_classes": len(ctx.class_counts), "points": point_channels(ctx), "hidden": cfg.hidden,
          "compressed_size": cfg.compressed_size, "variant": cfg.variant}


def save_modulator(phi, ctx, workdir: str) -> str:
  """Writes ``workdir/modulator/{params.msgpack, spec.json}`` atomically; returns the folder."""
  folder = files.join(workdir, ARTIFACT_DIR)
  files.write_atomic(files.join(folder, "params.msgpack"), flax.serialization.to_bytes(phi))
  files.write_json_atomic(files.join(folder, "spec.json"), modulator_spec(ctx))
  return folder


def load_modulator(path: str, ctx):
  """phi of a saved modulator, after checking that its spec (``SPEC_KEYS``) equals this run's."""
  folder = path if files.exists(files.join(path, "spec.json")) else files.join(path, ARTIFACT_DIR)
  spec_path = files.join(folder, "spec.json")
  if not files.exists(spec_path):
    raise FileNotFoundError(f"mfm.load_modulator={path!r}: no {ARTIFACT_DIR}/spec.json there; expected "
                            "the workdir of an MFM run with generator=network")
  spec = files.read_json(spec_path, "a modulator spec")
  mine = modulator_spec(ctx)
  for key in SPEC_KEYS:
    theirs, wanted = spec.get(key), mine[key]
    if key == "points":  # the raw output layout follows the points' order: compare as sequences
      theirs, wanted = list((theirs or {}).items()), list(wanted.items())
    if theirs != wanted:
      raise ValueError(f"mfm.load_modulator={path!r} does not fit: its {key} is {theirs}, this run "
                       f"needs {wanted} (input = number of classes; output = the modulated points' "
                       "channels, in order; variant = how raw outputs become gamma and beta)")
  template = modulator_network(ctx).init(jax.random.key(0), jnp.zeros((1, mine["num_classes"])))["params"]
  with files.open(files.join(folder, "params.msgpack"), "rb") as f:
    return flax.serialization.from_bytes(template, f.read())


def test_modulation(view, num_samples: int) -> tuple[dict, np.ndarray]:
  """(gamma, beta) that the learned modulator gives the first ``num_samples`` test images."""
  images = augment.eval_transform(jnp.asarray(view.test_images[:num_samples]), view.mean, view.std)
  logits, _ = ts.forward(view.ctx.model, view.state.params, view.state.batch_stats, images, train=False)
  modulation = modulation_for(view.state.hparams["phi"], jax.nn.softmax(logits), None, view.ctx)
  return jax.device_get(modulation), np.asarray(view.test_labels[:num_samples])


def finalize(view, workdir: str) -> None:
  """Saves the modulator (generator=network) and t-SNE plots of gamma / beta on test samples
  (when the test images are in memory: ``view.test_images`` is None for a streamed run)."""
  cfg = view.ctx.config.mfm
  if cfg.generator != "network":
    return
  if not cfg.load_modulator:
    save_modulator(view.state.hparams["phi"], view.ctx, workdir)
  if cfg.tsne_samples and view.ctx.config.train.plots and view.test_images is not None:
    from lt_jax import plots  # pylint: disable=g-import-not-at-top  (matplotlib)
    modulation, labels = test_modulation(view, cfg.tsne_samples)
    names = list(modulation)
    for name in sorted({names[0], names[-1]}):
      plots.modulation_tsne(modulation[name], labels, view.class_names,
                            files.join(workdir, "plots", f"tsne_{name}.png"), title=name)
