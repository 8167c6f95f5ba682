"""Meta Feature Modulator on MIT-67 (MFM Table 4 row 7 "Ours", 24.63% error); recipe in configs/large_scale.py.

The paper's recipe (MFM lines 204, 315): its 60/40 split of all 15,620 images, ImageNet-pretrained
VGG-11 with only the last FC after a global average pool (``vgg11_gap``), 20 development images
per class, the last conv layer (conv8) modulated, SGD lr 0.01 momentum 0.9 wd 1e-4 batch 40, 90
epochs, x0.1 every 30, resize to 224 x 224 + flip, modulator hidden 256 at fixed lr 1e-4. Row 8
(with WH-layer) is configs/mfm_mit67_wh.py.

  python -m lt_jax.data.mit67 MIT67_ROOT       # once: writes MIT67_{train_60,test_40}.txt there
  python -m lt_jax.models.convert_torchvision vgg11.pth vgg11.msgpack --arch=vgg11_gap   # once
  python -m lt_jax.main --config=configs/mfm_mit67.py --workdir=DIR --config.dataset.path=MIT67_ROOT \
    --config.model.init_checkpoint=vgg11.msgpack
  python -m lt_jax.main --config=configs/mfm_mit67.py:smoke --workdir=DIR   (generated miniature)
"""

from . import large_scale


def get_config(arg: str = ""):
  return large_scale.build("mit67", "mfm", arg)
