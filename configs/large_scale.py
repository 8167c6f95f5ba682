"""Large-scale rows: CE / CB-meta / MFM / FSA on ImageNet-LT, Places-LT, iNaturalist 2017 and 2018.

  --config=configs/large_scale.py:DATASET,METHOD[,smoke]     (or the thin files *_imagenet_lt.py...)
  DATASET in imagenet_lt, places_lt, inat2017, inat2018, mit67; METHOD in ce, cbmeta, mfm, fsa

Point the data at your copy: ``--config.dataset.path=IMAGE_ROOT`` (and ``--config.dataset.train_list
=...`` etc. when the list files are not under the image root; see docs/large_scale.md).
``:smoke`` swaps in a generated miniature of the same format (``lt_jax.data.miniature``, written to
``$TMPDIR/lt_jax_miniatures/FORMAT`` on first use) at 32 px with a tiny ResNet-10 / VGG-11, so the
run streams through the same loop end to end in about a minute on 2 CPU cores.

Published numbers (experiments/paper_numbers/*.csv): ImageNet-LT top-1 error CE 74.74, CB-CE
73.41, CB-meta 70.10 (Jamal: ResNet-32, lr decayed every 35 epochs, ``JAMAL_RECIPES``); FSA 35.2%
accuracy (ResNet-10 from scratch; many 47.3, medium 31.6, few 14.7). Places-LT CE 73.00, CB-meta
69.20 error (Jamal); FSA 36.4% accuracy (pretrained ResNet-152). iNaturalist 2018 CE 36.20,
CB-meta 32.45 error (Jamal); FSA 65.91 / 68.39 / 69.08% accuracy with ResNet-50 / 101 / 152 (phase
I 100 epochs, phase II 200 iterations, ``FSA_RECIPES``). iNaturalist 2017: CE 43.49, CB-meta 40.62
error (Jamal); FSA 61.96 / 64.16 / 66.58% accuracy; it reuses the 2018 recipe. No paper reports MFM
at this scale. MIT-67 (MFM Table 4, VGG-11 pretrained, 20 meta images per class): CE 28.54, MFM
24.63, MFM with WH-layer 24.20 error; its recipe is the paper's (App. B), see DATASETS['mit67'] and
experiments/paper_recipes/mfm.csv.

Rows with ``pretrained=True`` (Places-LT's ResNet-152, MIT-67's VGG-11) are refused at load until
``--config.model.init_checkpoint`` names converted torchvision weights (the error says how).

Recipe values the reference does not give are marked ASSUMED below: they follow the usual
large-scale long-tail setups (OLTR, Liu et al. 2019, for ImageNet-LT / Places-LT; Cui et al. 2019 and
LDAM-DRW for iNaturalist) and should be checked against the papers before quoting numbers.
"""

import os
import tempfile

from . import default

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
METHODS = ("ce", "cbmeta", "mfm", "fsa")

DATASETS = {
    "imagenet_lt": dict(
        name="imagenet_lt", source="split_file", miniature="imagenet_lt",
        lists=("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"),
        # meta: the 20-per-class ImageNet-LT val list (Jamal et al.'s development set size).
        meta_strategy="meta", meta_per_class=20,
        # FSA: ResNet-10 from scratch (reference); ASSUMED OLTR stage-1 recipe.
        model="resnet10_imagenet", pretrained=False, batch_size=256, lr=0.1, weight_decay=5e-4,
        epochs=30, decay_epochs=(10, 20)),
    "places_lt": dict(
        name="places_lt", source="split_file", miniature="places_lt",
        lists=("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"),
        meta_strategy="meta", meta_per_class=10,  # 10 of the 20 val images per class
        # FSA: ImageNet-pretrained ResNet-152 (reference); ASSUMED OLTR fine-tuning recipe.
        model="resnet152_imagenet", pretrained=True, batch_size=256, lr=0.01, weight_decay=5e-4,
        epochs=30, decay_epochs=(10, 20)),
    "inat2017": dict(
        name="i_naturalist2017", source="inat_json", miniature="inat2017",
        lists=("train2017.json", "", "val2017.json"),
        meta_strategy="development", meta_per_class=5,  # copies from the training set
        # ASSUMED: the iNaturalist 2018 recipe below (FSA's phase I: FSA_RECIPES).
        model="resnet50_imagenet", pretrained=False, batch_size=256, lr=0.1, weight_decay=1e-4,
        epochs=90, decay_epochs=(30, 60)),
    "inat2018": dict(
        name="i_naturalist2018", source="inat_json", miniature="inat2018",
        lists=("train2018.json", "", "val2018.json"),
        meta_strategy="development", meta_per_class=2,
        # ResNet-50 (FSA's and Jamal's rows); ASSUMED Cui et al. / LDAM-DRW schedule (FSA's
        # phase I: FSA_RECIPES).
        model="resnet50_imagenet", pretrained=False, batch_size=256, lr=0.1, weight_decay=1e-4,
        epochs=90, decay_epochs=(30, 60)),
    "mit67": dict(
        # MFM Table 4 / App. B (MFM lines 204, 315). The split: "the complete dataset with
        # imbalanced train/test splits of 60%/40%", written from the user's Images/ folder by
        # `python -m lt_jax.data.mit67 MIT67_ROOT` (seeded, per class; never published).
        name="mit67", source="split_file", miniature="mit67", lists=(
            "MIT67_train_60.txt", "", "MIT67_test_40.txt"),  # path-only lists, class = folder
        meta_strategy="development", meta_per_class=20,  # "randomly copy 20 samples per class"
        # "a pre-trained VGG-11 (only reserving the last FC layer and adding an average-pooling
        # before it)"; "SGD with a initial learning rate of 0.01, a momentum of 0.9, a weight decay
        # of 1e-4 with mini-batch size of 40 ... 90 epochs ... decayed by 0.1 every 30 epochs".
        model="vgg11_gap", pretrained=True, batch_size=40, lr=0.01, weight_decay=1e-4,
        epochs=90, decay_epochs=(30, 60),
        # "Each image is resized as 224x224, and then randomly flipped horizontally": decoded in
        # memory (15,620 images at 224 px: 2.4 GB), squashed to 224 x 224, flipped; no crop.
        in_memory=True),
}

# What a paper states for its own method on a dataset, over DATASETS[key] (same keys).
# Jamal et al.'s slides, ImageNet-LT: "ImageNet: Resnet32; learn rate = 0.1**(epochs|35)": the
# CIFAR ResNet-32 (the only ResNet-32; its CIFAR recipe's network), lr x0.1 every 35 epochs from
# 0.1 (the literal expression has no base; 0.1 as the CIFAR recipe and Places' 0.01 * 0.1**...).
# ASSUMED: 90 epochs (the usual ImageNet length; the slides give only the period). Their CE row is
# trained the same way. Places-LT ("Resnet152; learn rate = 0.01*0.1**(epochs|10)") and iNat (not
# given) keep DATASETS'.
JAMAL_RECIPES = {
    "imagenet_lt": dict(model="resnet32", lr=0.1, epochs=90, decay_epochs=(35, 70)),
}
# FSA (Chu et al.) Sec. 5.3, iNaturalist: "In Phase-I, the starting learning rate is 0.1 and reduced
# every 30 epochs for total of 100 epochs" (x0.1: "the similar training strategy with CIFAR", whose
# lr "decreases by 1/10"); "In Phase-II, fine tuning is performed with a fixed learning rate of
# 0.001 for 200 iterations".
FSA_RECIPES = {
    "inat2017": dict(epochs=100, decay_epochs=(30, 60, 90), fsa_steps=200),
    "inat2018": dict(epochs=100, decay_epochs=(30, 60, 90), fsa_steps=200),
}
STATED_FIELDS = {"model": "model.name", "lr": "optim.lr", "epochs": "train.epochs",
                 "decay_epochs": "optim.decay_epochs"}  # recipe key -> config field


def recipe(method: str, key: str) -> dict:
  """DATASETS[key] with the fields the method's paper states for that dataset."""
  extra = {"ce": JAMAL_RECIPES, "cbmeta": JAMAL_RECIPES, "fsa": FSA_RECIPES}.get(method, {})
  return {**DATASETS[key], **extra.get(key, {})}


def dataset_recipe(c, key: str):
  """Data, backbone and optimiser of ``DATASETS[key]`` on top of ``c``."""
  spec = DATASETS[key]
  c.dataset.name = spec["name"]
  c.dataset.source = spec["source"]
  c.dataset.path = ""  # the user's image root
  c.dataset.train_list, c.dataset.val_list, c.dataset.test_list = spec["lists"]
  c.dataset.image_size = 224
  c.dataset.imbalance = 1.0  # the split ships long-tailed; not re-imbalanced
  c.meta.strategy = spec["meta_strategy"]
  c.meta.per_class = spec["meta_per_class"]
  c.meta.batch_size = 100
  c.model.name = spec["model"]
  c.model.pretrained = spec["pretrained"]  # True: refused at load without the weights (models.validate_pretrained)
  c.model.init_checkpoint = ""  # pretrained rows: --config.model.init_checkpoint=OUT.msgpack
  c.train.batch_size = spec["batch_size"]
  c.train.epochs = spec["epochs"]
  c.train.eval_batch_size = 500
  c.optim.lr = spec["lr"]
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = spec["weight_decay"]
  c.optim.warmup_epochs = 0
  c.optim.decay_epochs = spec["decay_epochs"]
  c.optim.decay_factor = 0.1
  c.augment.crop = False  # streamed: random-resized-crop in the loader (grain_loader.TrainDecode);
  # in memory (MIT-67): the images are squashed to image_size, no crop
  c.augment.flip = True
  c.augment.mean, c.augment.std = IMAGENET_MEAN, IMAGENET_STD
  return c


def method_recipe(c, method: str, key: str):
  """CE, CB-meta (Jamal), MFM or FSA on top of a dataset recipe."""
  if method not in METHODS:
    raise ValueError(f"method {method!r} is unknown; expected one of {list(METHODS)}")
  for name, value in recipe(method, key).items():  # JAMAL_RECIPES / FSA_RECIPES over DATASETS
    if name in STATED_FIELDS:
      group, field = STATED_FIELDS[name].split(".")
      c[group][field] = value
  c.loss.name = "ce"
  if method == "ce":
    c.method = "erm"
  elif method == "cbmeta":
    # Jamal et al.: plain CE first, then w_y (beta 0.9999) + eps; official-code settings.
    # ASSUMED: the meta phase starts at the first lr decay, as the CIFAR recipe (160 of 200, the
    # first of its decays at 160 and 180), so eps (proportional to the lr) has the CIFAR scale.
    c.method = "cbmeta"
    c.loss.cb_beta = 0.9999
    c.cbmeta.start_epoch = c.optim.decay_epochs[0]
    c.cbmeta.tau = 0.01
    c.cbmeta.lookahead_reduction = "sum"
    c.cbmeta.meta_loss = "base"
  elif method == "mfm":
    c.method = "mfm"
    if key == "mit67":
      # MFM line 204: "directly modulate the features of the last convolution layer" (conv8 of
      # VGG-11); line 315: "neuron number of hidden layer as 256 ... learning rate as 1e-4".
      c.mfm.points = ("conv8",)
      c.mfm.hidden = 256
      c.mfm.lr = 1e-4
    else:
      # No MFM row at this scale: the CIFAR choices (the last stage: ResBlock3 -> block4 here,
      # one hidden layer of 100 units, fixed lr 1e-3).
      c.mfm.points = ("block4",)
      c.mfm.hidden = 100
      c.mfm.lr = 1e-3
  else:
    # FSA: phase I = plain CE with the dataset recipe, then classifier fine-tuning at a fixed lr
    # 1e-3, batch 128 (CIFAR: 6,400 iterations; iNaturalist: 200, FSA_RECIPES; ImageNet-LT /
    # Places-LT: not given, ASSUMED CIFAR's 6,400). ImageNet-LT: N_a = N_f = 15 as the unofficial
    # code's ImageNet-LT config (reference protocols.md E.9); elsewhere the paper's 3.
    c.method = "fsa"
    c.fsa.phase1_method = "erm"
    c.fsa.steps = recipe(method, key).get("fsa_steps", 6400)
    c.fsa.eval_every = min(800, c.fsa.steps)  # 800 divides 6,400; 200 for 200
    c.fsa.batch_size = 128
    c.fsa.lr = 1e-3
    c.fsa.num_augment = c.fsa.num_confusing = 15 if key == "imagenet_lt" else 3
  if method in ("cbmeta", "mfm") and c.meta.strategy == "none":
    raise ValueError(f"{method} needs meta data; DATASETS[{key!r}] has meta_strategy 'none'")
  return c


def miniature_root(fmt: str) -> str:
  """Where ``:smoke`` keeps the generated miniature of ``fmt``."""
  return os.path.join(os.environ.get("LT_JAX_MINIATURES",
                                     os.path.join(tempfile.gettempdir(), "lt_jax_miniatures")), fmt)


def smoke_miniature(c, key: str):
  """After ``default.smoke``: back to this dataset's format, as a generated miniature at 32 px,
  with a tiny network of the recipe's family."""
  from lt_jax.data import miniature  # pylint: disable=g-import-not-at-top
  spec = recipe("ce" if c.method == "erm" else c.method, key)
  fmt = spec["miniature"]
  c.dataset.name = f"{fmt}_miniature"
  c.dataset.source = spec["source"]
  c.dataset.miniature = fmt
  c.dataset.path = miniature_root(fmt)
  lists = miniature.LISTS[fmt]
  c.dataset.train_list, c.dataset.val_list, c.dataset.test_list = (
      lists["train"], lists["val"], lists["test"])
  c.dataset.image_size = 32
  c.dataset.imbalance = 1.0
  c.meta.per_class = min(spec["meta_per_class"], 5)
  c.model.name = (spec["model"] if spec["model"].startswith("vgg") else
                  "resnet10_imagenet" if spec["model"].endswith("_imagenet") else "resnet8")
  c.model.width = 4
  c.model.pretrained = False  # the miniature trains from scratch
  c.model.init_checkpoint = ""
  c.train.epochs = 2
  c.optim.decay_epochs = (1,)
  # pad-and-crop at 32 px (the streamed 224-px configs take random-resized crops); MIT-67 no crop
  c.augment.crop = not spec.get("in_memory", False)
  c.augment.pad = 4
  c.augment.mean, c.augment.std = IMAGENET_MEAN, IMAGENET_STD
  if c.method == "cbmeta":
    c.cbmeta.start_epoch = 1
  c.fsa.num_augment = c.fsa.num_confusing = min(c.fsa.num_confusing, 3)  # miniatures: <= 8 classes
  return c


def build(key: str, method: str, arg: str = ""):
  """The config of (dataset ``key``, ``method``), shrunk to the miniature when ``arg`` has smoke."""
  if key not in DATASETS:
    raise ValueError(f"dataset {key!r} is unknown; expected one of {list(DATASETS)}")
  c = method_recipe(dataset_recipe(default.get_config(), key), method, key)
  # streamed, both phases of FSA too (its phase II decodes the images it samples); MIT-67 (15,620
  # images, 2.4 GB at 224 px) is decoded in memory, squashed to 224 x 224 as the paper resizes
  c.loader.stream = not DATASETS[key].get("in_memory", False)
  c = default.apply_args(c, arg)
  if "smoke" in [w.strip() for w in arg.split(",")]:
    smoke_miniature(c, key)
  return c


def get_config(arg: str = ""):
  """``DATASET,METHOD[,smoke]``, e.g. ``imagenet_lt,cbmeta,smoke``."""
  words = [w.strip() for w in arg.split(",") if w.strip()]
  if len(words) < 2:
    raise ValueError(f"configs/large_scale.py needs ':DATASET,METHOD[,smoke]' with DATASET in "
                     f"{list(DATASETS)} and METHOD in {list(METHODS)}; got {arg!r}")
  return build(words[0], words[1], ",".join(words[2:]))
