"""MFM with the weight-hashing layer on MIT-67 (MFM Table 4 row 8 "Ours (with WH-layer)", 24.20%).

configs/mfm_mit67.py with App. B's hashing (MFM line 315): "For gamma, we set the dimension of its
compressed vectors gamma-hat as 256, and so does for beta": the modulator emits gamma-hat (256)
and beta-hat (256), each decompressed by its own fixed hash map (lt_jax.models.modulator).

  python -m lt_jax.main --config=configs/mfm_mit67_wh.py --workdir=DIR --config.dataset.path=MIT67_ROOT \
    --config.model.init_checkpoint=vgg11.msgpack
  python -m lt_jax.main --config=configs/mfm_mit67_wh.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  c = large_scale.build("mit67", "mfm", arg)
  smoke = "smoke" in [w.strip() for w in arg.split(",")]
  c.mfm.compressed_size = 8 if smoke else 256
  return c
