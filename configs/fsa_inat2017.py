"""Feature Space Augmentation (Chu et al.) on iNaturalist 2017; recipe, published numbers and assumptions in configs/large_scale.py.

  python -m lt_jax.main --config=configs/fsa_inat2017.py --workdir=DIR --config.dataset.path=IMAGE_ROOT
  python -m lt_jax.main --config=configs/fsa_inat2017.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  return large_scale.build("inat2017", "fsa", arg)
