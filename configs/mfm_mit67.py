"""Meta Feature Modulator on MIT-67 (MFM Table 4, pretrained VGG-11); recipe and assumptions in configs/large_scale.py.

  python -m lt_jax.main --config=configs/mfm_mit67.py --workdir=DIR --config.dataset.path=MIT67_ROOT \
    --config.model.init_checkpoint=vgg11.msgpack
  python -m lt_jax.main --config=configs/mfm_mit67.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  return large_scale.build("mit67", "mfm", arg)
