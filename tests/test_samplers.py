"""Class-aware samplers: probabilities against their formulas, drawn frequencies against them."""

import jax
import numpy as np
import pytest

from lt_jax.data import samplers

COUNTS = np.array([100, 25, 4, 1])


@pytest.mark.parametrize("kind, weights", [
    ("instance", COUNTS), ("class_balanced", np.ones(4)), ("sqrt", np.sqrt(COUNTS)),
    ("reversed", COUNTS.max() / COUNTS)])
def test_class_probabilities_follow_their_formula(kind, weights):
  np.testing.assert_allclose(samplers.class_probabilities(COUNTS, kind), weights / weights.sum())


def test_classes_without_samples_are_never_drawn():
  for kind in samplers.SAMPLERS:
    assert samplers.class_probabilities([5, 0, 2], kind)[1] == 0


def test_unknown_sampler_names_the_field():
  with pytest.raises(ValueError, match="dataset.sampler='uniform'"):
    samplers.class_probabilities(COUNTS, "uniform")


@pytest.mark.parametrize("kind", ["class_balanced", "sqrt", "reversed"])
def test_drawn_class_frequencies_match_the_probabilities(kind):
  labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), COUNTS))
  index = samplers.class_index(labels, 4)
  probs = samplers.class_probabilities(COUNTS, kind)
  ids = np.asarray(jax.jit(samplers.sample_ids, static_argnums=3)(jax.random.key(1), index, probs, 40_000))
  frequencies = np.bincount(labels[ids], minlength=4) / len(ids)
  tolerance = 4 * np.sqrt(probs * (1 - probs) / len(ids)) + 1e-9  # 4 binomial standard deviations
  assert np.all(np.abs(frequencies - probs) <= tolerance), (frequencies, probs)
  # within a class every sample is drawn: the rarest class's only sample and all of class 1
  assert set(ids[labels[ids] == 1]) == set(np.flatnonzero(labels == 1))
