"""MFM on your own image-folder dataset, with the MIT-67 recipe of MFM Table 4 (configs/large_scale.py).

224x224 inputs (squashed, + flip), VGG-11 with global average pooling and one FC (``vgg11_gap``;
or ``--config.model.name=resnet50_imagenet --config.mfm.points=block4`` etc.), modulated at the
last conv layer (conv8), weight hashing on (``mfm.compressed_size=256``: gamma-hat and beta-hat of
256 each), modulator with 256 hidden units and fixed lr 1e-4, 20 development images per class,
optional ImageNet initialisation from converted torchvision weights (docs/large_scale.md):

  python -m lt_jax.main --config=configs/mfm_folder.py --workdir=DIR \
    --config.dataset.path=/data/my_images            # train/<class>/*.jpg, test/<class>/*.jpg
    [--config.model.init_checkpoint=vgg11.msgpack]
  python -m lt_jax.main --config=configs/mfm_folder.py:smoke --workdir=DIR   (generated miniature)

Not a paper row (your data); MIT-67's Table 4 rows are configs/{ce,mfm,mfm}_mit67.py and configs/mfm_mit67_wh.py.
"""

from . import large_scale


def get_config(arg: str = ""):
  c = large_scale.build("mit67", "mfm", arg)
  c.model.pretrained = False  # optional here: --config.model.init_checkpoint=...
  c.mfm.compressed_size = 256
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
