"""Cross-entropy baseline on MIT-67 (MFM Table 4 row 1 "BaseModel", 28.54% error); recipe in configs/large_scale.py.

The recipe of configs/mfm_mit67.py without the modulator (the paper: "a pre-trained VGG-11 ...
trained with cross-entropy loss as our BaseModel", MFM line 204).

  python -m lt_jax.data.mit67 MIT67_ROOT       # once: writes MIT67_{train_60,test_40}.txt there
  python -m lt_jax.main --config=configs/ce_mit67.py --workdir=DIR --config.dataset.path=MIT67_ROOT \
    --config.model.init_checkpoint=vgg11.msgpack
  python -m lt_jax.main --config=configs/ce_mit67.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  return large_scale.build("mit67", "ce", arg)
