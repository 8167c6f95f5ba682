"""MFM on your own image-folder dataset, MIT-67 style (MFM Table 4 setting).

224x224 inputs, VGG-11 (or ``--config.model.name=resnet50_imagenet`` etc.), modulated at fc7 (block4
for ResNets), weight hashing on (``mfm.compressed_size=256``), modulator with 256 hidden units and
fixed lr 1e-4 (the paper's large-network setting), 20 development images per class, optional
ImageNet initialisation from converted torchvision weights (docs/large_scale.md):

  python -m lt_jax.main --config=configs/mfm_folder.py --workdir=DIR \
    --config.dataset.path=/data/my_images            # train/<class>/*.jpg, test/<class>/*.jpg
    [--config.model.init_checkpoint=vgg11.msgpack]
  python -m lt_jax.main --config=configs/mfm_folder.py:smoke --workdir=DIR   (generated miniature)

The schedule is the MIT-67 recipe of configs/large_scale.py (its ASSUMED values included).
"""

from . import large_scale


def get_config(arg: str = ""):
  c = large_scale.build("mit67", "mfm", arg)
  c.mfm.compressed_size = 256
  c.mfm.hidden = 256
  c.mfm.lr = 1e-4
  if "smoke" in [w.strip() for w in arg.split(",")]:
    c.mfm.hidden = 16
    c.mfm.compressed_size = 32
    return c
  c.dataset.name = "image_folder"
  c.dataset.source = "folder"  # split/class/*.jpg|png, a folder or a zip
  c.dataset.path = ""  # required: --config.dataset.path=...
  c.dataset.train_list = c.dataset.val_list = c.dataset.test_list = ""
  c.dataset.image_size = 224
  c.loader.stream = False  # a folder / zip is read into memory (MIT-67 at 224 px: ~2.4 GB)
  return c
