"""Feature Space Augmentation (Chu et al., ECCV 2020): the pure pieces of phase II.

Phase I trains an ordinary network. Phase II freezes it and fine-tunes the classifier on batches in
which every tail sample's feature map f_t is mixed with feature maps of the classes it is confused
with:

* CAM of a sample of class y on the pre-pooling map f (h, w, K): M_y = sum_k w_k^y f_k with W the
  classifier's kernel (the paper's Eq. (1), the CAM of Zhou et al.), min-max normalised per sample
  to [0, 1] (``class_activation_maps``). ReLU'd first (``relu=True``) it is Grad-CAM of the logit y,
  since the head is GAP + FC.
* class-specific part of a tail sample: the positions with M > tau_s; class-generic part of a
  confusing-class sample: the positions with M < tau_g (``decompose``).
* head and tail: classes sorted by count, head = the smallest prefix holding >= h_r of the samples
  (``head_tail_split``).
* confusing classes of tail class t: the N_f classes with the largest mean classification score
  over t's training samples (``confusing_classes``).
* synthesis: for a tail sample and each of its N_a confusing samples, gamma ~ U(0, 1), then
  round(gamma L) of the L positions take vectors drawn (with repeats) from the tail sample's
  class-specific part and the others from the confusing sample's class-generic part, all-zero
  vectors excluded (``synthesise``); each new map carries the tail sample's label (``compose``).

Everything here is a pure function of arrays; ``lt_jax.methods.fsa`` wires it into the run.
"""

import jax
import jax.numpy as jnp
import numpy as np

CAM_RELATIVE_EPS = 1e-6  # a map whose max - min is below this fraction of its magnitude is constant
GAMMA_MIN = 1e-7  # gamma and the noise are drawn from U(GAMMA_MIN, 1): 0 excluded


def class_activation_maps(features: jax.Array, kernel: jax.Array, labels: jax.Array, *,
                          relu: bool = False) -> jax.Array:
  """Per-sample CAM M_y = sum_k w_k^y f_k of the sample's class y (Eq. (1)), normalised to [0, 1].

  Args:
    features: (N, h, w, K) pre-pooling feature maps f.
    kernel: (K, C) classifier kernel W (w^y = W[:, y]); the bias does not change a normalised CAM.
    labels: (N,) the class y of each map (the ground truth in FSA).
    relu: ReLU before normalising (Grad-CAM): every location with M <= 0 then normalises to 0.
      False (Eq. (1)) keeps negative evidence as the low values.

  Returns:
    (N, h, w) maps in [0, 1]: (M - min M) / (max M - min M). A constant map (e.g. all zero after
    the ReLU) has no class-specific region and normalises to zeros, never NaN.
  """
  cam = jnp.einsum("nhwk,kn->nhw", features, kernel[:, labels])
  if relu:
    cam = jax.nn.relu(cam)
  low = cam.min(axis=(1, 2), keepdims=True)
  high = cam.max(axis=(1, 2), keepdims=True)
  span = high - low
  varies = span > CAM_RELATIVE_EPS * jnp.maximum(jnp.abs(high), jnp.abs(low))
  return jnp.where(varies, (cam - low) / jnp.where(varies, span, 1.0), 0.0)


def decompose(cam: jax.Array, tau_s: float, tau_g: float) -> tuple[jax.Array, jax.Array]:
  """(class-specific mask M > tau_s, class-generic mask M < tau_g), each shaped like ``cam``."""
  return cam > tau_s, cam < tau_g


def head_tail_split(counts, head_ratio: float) -> tuple[np.ndarray, np.ndarray]:
  """(head classes, tail classes), each sorted by class id.

  Classes are sorted by count (descending, ties by id); the head is the smallest prefix whose
  samples make up at least h_r = ``head_ratio`` of the training set, the tail is the rest.
  CIFAR-10-LT IF 100 gives head = 0-4 (92.8% >= 90%, while 0-3 hold 87.6%).
  """
  counts = np.asarray(counts, np.int64)
  if not 0 < head_ratio < 1:
    raise ValueError(f"fsa.head_ratio={head_ratio} must be in (0, 1)")
  order = np.argsort(-counts, kind="stable")
  cumulative = np.cumsum(counts[order])
  num_head = int(np.argmax(cumulative >= head_ratio * cumulative[-1])) + 1
  if num_head >= len(counts):
    raise ValueError(f"fsa.head_ratio={head_ratio} puts all {len(counts)} classes in the head (counts "
                     f"{counts.tolist()}); lower it so some classes are tail")
  return np.sort(order[:num_head]), np.sort(order[num_head:])


def mean_scores(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """S[c, j]: mean classification score (softmax) of class j over the samples of class c."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  sums = np.zeros((num_classes, probs.shape[1]))
  np.add.at(sums, labels, probs)
  counts = np.bincount(labels, minlength=num_classes)[:, None]
  return sums / np.maximum(counts, 1)


CONFUSION_READINGS = ("paper", "transposed")


def confusing_classes(scores: np.ndarray, num_confusing: int, reading: str = "paper") -> np.ndarray:
  """(C, N_f) confusing classes of every class, most confusing first.

  ``paper``: for class t, the N_f classes j != t with the largest S[t, j] (where t's samples put
  their probability). ``transposed`` (the public reimplementation): the N_f classes c with the
  largest S[c, t] (whose samples put most probability on t).
  """
  if reading not in CONFUSION_READINGS:
    raise ValueError(f"fsa.confusion={reading!r} is unknown; expected one of {list(CONFUSION_READINGS)}")
  num_classes = scores.shape[0]
  if not 1 <= num_confusing <= num_classes - 1:
    raise ValueError(f"fsa.num_confusing={num_confusing} (N_f) must be in [1, {num_classes - 1}] for "
                     f"{num_classes} classes")
  scores = np.array(scores, np.float64)
  np.fill_diagonal(scores, -np.inf)
  if reading == "transposed":
    scores = scores.T
  return np.argsort(-scores, axis=1, kind="stable")[:, :num_confusing]


def _fuse_one(gamma, place_noise, specific_noise, generic_noise, tail_map, tail_specific,
              confusing_map, confusing_generic):
  """One synthesised (h, w, K) map from pre-drawn randomness; see ``synthesise``.

  gamma: the ratio; place_noise (L,): ranks choosing the round(gamma L) class-specific positions;
  specific_noise, generic_noise (L, L): Gumbel noise drawing, for every position, a source vector
  uniformly among the allowed ones (argmax of noise + log mask).
  """
  height, width, channels = tail_map.shape
  num = height * width
  tail_vectors, confusing_vectors = tail_map.reshape(num, channels), confusing_map.reshape(num, channels)
  specific_ok = tail_specific.reshape(num) & jnp.any(tail_vectors != 0, axis=-1)
  generic_ok = confusing_generic.reshape(num) & jnp.any(confusing_vectors != 0, axis=-1)
  num_specific = jnp.round(gamma * num).astype(jnp.int32)
  # Exactly round(gamma L) positions, chosen at random, take class-specific vectors.
  from_specific = jnp.argsort(jnp.argsort(place_noise)) < num_specific
  specific_src = jnp.argmax(specific_noise + jnp.where(specific_ok, 0.0, -jnp.inf), axis=-1)
  generic_src = jnp.argmax(generic_noise + jnp.where(generic_ok, 0.0, -jnp.inf), axis=-1)
  # An empty part (no position passes its threshold with a non-zero vector) contributes zeros.
  specific = tail_vectors[specific_src] * jnp.any(specific_ok).astype(tail_map.dtype)
  generic = confusing_vectors[generic_src] * jnp.any(generic_ok).astype(tail_map.dtype)
  fused = jnp.where(from_specific[:, None], specific, generic)
  return fused.reshape(height, width, channels)


def synthesise(key, tail_maps, tail_specific, confusing_maps, confusing_generic):
  """N_a new maps per tail sample from its class-specific and its confusing samples' generic parts.

  Args:
    key: PRNG key.
    tail_maps: (N_t, h, w, K) feature maps f_t of the tail samples.
    tail_specific: (N_t, h, w) class-specific masks (M_t > tau_s).
    confusing_maps: (N_t, N_a, h, w, K) maps of the samples drawn from t's confusing classes.
    confusing_generic: (N_t, N_a, h, w) their class-generic masks (M_c < tau_g).

  Returns:
    (maps (N_t, N_a, h, w, K), gamma (N_t, N_a)): gamma ~ U(0, 1); in map (i, a), round(gamma L)
    random positions hold vectors drawn with repeats from tail i's class-specific non-zero vectors,
    the other positions vectors drawn from confusing sample (i, a)'s class-generic non-zero vectors.
  """
  num_tail, num_aug, height, width = confusing_generic.shape
  num = height * width
  # All randomness from one uniform draw: every separate jax.random call costs seconds of compile.
  pair = (num_tail, num_aug)
  sizes = (1, num, num * num, num * num)
  u = jax.random.uniform(key, (*pair, sum(sizes)), minval=GAMMA_MIN, maxval=1.0)
  gamma, place_noise, specific_u, generic_u = jnp.split(u, np.cumsum(sizes)[:-1], axis=-1)
  gamma = gamma[..., 0]  # U(0, 1), 0 excluded
  gumbel = lambda v: -jnp.log(-jnp.log(v)).reshape(*pair, num, num)
  specific_noise, generic_noise = gumbel(specific_u), gumbel(generic_u)
  fuse_row = jax.vmap(_fuse_one, in_axes=(0, 0, 0, 0, None, None, 0, 0))
  fused = jax.vmap(fuse_row)(gamma, place_noise, specific_noise, generic_noise, tail_maps,
                             tail_specific, confusing_maps, confusing_generic)
  return fused, gamma


def compose(key, tail_maps, tail_labels, tail_cams, confusing_maps, confusing_cams, head_maps,
            head_labels, *, tau_s: float, tau_g: float):
  """The FSA batch: N_t originals, N_t N_a synthesised maps, N_t (1 + N_a) head maps.

  Args:
    tail_maps, tail_labels, tail_cams: (N_t, h, w, K), (N_t,), (N_t, h, w) of the tail samples.
    confusing_maps, confusing_cams: (N_t, N_a, h, w, K), (N_t, N_a, h, w).
    head_maps, head_labels: (N_t (1 + N_a), h, w, K), (N_t (1 + N_a),).

  Returns:
    (maps (2 N_t (1 + N_a), h, w, K), labels, gamma (N_t, N_a)); every synthesised map is labelled
    with its own tail sample's label y_t.
  """
  specific, _ = decompose(tail_cams, tau_s, tau_g)
  _, generic = decompose(confusing_cams, tau_s, tau_g)
  fused, gamma = synthesise(key, tail_maps, specific, confusing_maps, generic)
  num_tail, num_aug = fused.shape[:2]
  fused_labels = jnp.repeat(tail_labels, num_aug)  # row-major: (i, a) -> y_i
  maps = jnp.concatenate([tail_maps, fused.reshape(num_tail * num_aug, *fused.shape[2:]), head_maps])
  labels = jnp.concatenate([tail_labels, fused_labels, head_labels])
  return maps, labels, gamma


def pick_confusing(key, confusing_rows: jax.Array, num_augment: int) -> jax.Array:
  """(N_t, N_a) classes: for each row of N_f confusing classes, N_a of them in random order.

  N_a <= N_f draws without repeats (N_a = N_f uses each confusing class once, as the paper's
  batches do); N_a > N_f cycles through a random order of all N_f.
  """
  num_confusing = confusing_rows.shape[1]
  order = jnp.argsort(jax.random.uniform(key, confusing_rows.shape), axis=1)
  slots = order[:, jnp.arange(num_augment) % num_confusing]
  return jnp.take_along_axis(confusing_rows, slots, axis=1)


def batch_sizes(batch_size: int, num_augment: int) -> tuple[int, int]:
  """(N_t, actual batch 2 N_t (1 + N_a)) for the configured batch size (N_t = B // (2 (1 + N_a)))."""
  num_tail = batch_size // (2 * (1 + num_augment))
  return num_tail, 2 * num_tail * (1 + num_augment)
