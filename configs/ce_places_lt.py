"""Cross-entropy baseline on Places-LT; recipe, published numbers and assumptions in configs/large_scale.py.

  python -m lt_jax.main --config=configs/ce_places_lt.py --workdir=DIR --config.dataset.path=IMAGE_ROOT
  python -m lt_jax.main --config=configs/ce_places_lt.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  return large_scale.build("places_lt", "ce", arg)
