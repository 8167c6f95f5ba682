"""Default configuration: every field lt_jax reads, with its default.

Every paper row is a config file that imports this one and overrides a few fields. Any field can be
overridden on the command line: ``--config.optim.lr=0.05``. Passing ``:smoke`` after the config path
(``--config=configs/ce_cifar.py:smoke``) shrinks model, data and schedule so the run ends in under a
minute on two CPU cores, on scikit-learn's digits unless another dataset is named.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the default config (cross-entropy on CIFAR-10-LT, IF 100, ResNet-32)."""
  c = ml_collections.ConfigDict()
  c.method = "erm"  # erm | l2rw | mwnet | cbmeta | mfm | fsa
  c.seed = 0  # model init and training randomness (augmentation, batch order)
  c.replicas = 1  # independent models trained side by side (scale issue)

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "cifar10"  # TFDS catalog name, or a label for a folder / zip
  c.dataset.source = "tfds"  # tfds | folder | digits
  c.dataset.path = ""  # folder / zip laid out split/class/*.jpg|png (source=folder)
  c.dataset.data_dir = ""  # where TFDS keeps prepared datasets; "" = TFDS default
  c.dataset.image_size = 0  # resize images to this square size; 0 = keep native size
  c.dataset.imbalance = 100.0  # IF = n_max / n_min, >= 1
  c.dataset.profile = "exp"  # exp: n_i = floor(n_max IF^(-i/(C-1))) | step: half n_max, half n_max/IF
  c.dataset.protocol = "ldam"  # ldam: n_max = full class | mwnet: carve meta first, then the profile
  c.dataset.seed = 0  # seed of the long-tailed and meta selections
  c.dataset.test = "balanced"  # balanced | test1 | test2 (MFM appendix C.1 imbalanced test sets)
  c.dataset.test_imbalance = 10.0  # IF of test1 / test2

  c.meta = ml_collections.ConfigDict()
  c.meta.strategy = "none"  # none | meta (disjoint, from the full split) | development (copies of LT train)
  c.meta.per_class = 10  # M (meta) or K (development, at most n_c) images per class
  c.meta.batch_size = 100  # meta batch size; capped at the meta set size

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet32"  # resnet{6n+2} (CIFAR, option-A) | resnet18 | resnet34 | lenet
  c.model.width = 0  # base width; 0 = the model's own (16 for CIFAR ResNets, 64 for 18/34, 6 LeNet)
  c.model.classifier = "linear"  # linear | cosine (LDAM's normed linear, no bias)

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "ce"  # ce | focal | ldam
  c.loss.reweight = "none"  # none | cb (class-balanced, effective number)
  c.loss.cb_beta = 0.9999  # beta of the effective number (1 - beta^n) / (1 - beta)
  c.loss.drw_epoch = -1  # deferred re-weighting: class weights only from this epoch on; -1 = always
  c.loss.focal_gamma = 1.0  # gamma of the focal loss
  c.loss.ldam_max_m = 0.5  # largest LDAM margin (rarest class)
  c.loss.ldam_s = 30.0  # LDAM logit scale s

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.1  # base learning rate alpha
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 2e-4  # added to the gradient before momentum (PyTorch SGD)
  c.optim.warmup_epochs = 5  # epoch e < W runs at lr * (e + 1) / W (LDAM-DRW)
  c.optim.decay_epochs = (160, 180)  # lr multiplied by decay_factor at each of these epochs
  c.optim.decay_factor = 0.01

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.epochs = 200
  c.train.eval_every_epochs = 1
  c.train.checkpoint_every_epochs = 1
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 500
  c.train.plots = True  # PNG plots in the workdir at the end

  c.augment = ml_collections.ConfigDict()
  c.augment.crop = True  # pad + random crop back to the input size
  c.augment.pad = 4
  c.augment.pad_mode = "constant"  # constant (zeros, LDAM) | reflect (MW-Net, Jamal)
  c.augment.flip = True  # random horizontal flip
  c.augment.mean = ()  # per-channel mean in [0, 1]; () = computed from the training images
  c.augment.std = ()

  # Method groups: read only by their method.
  c.mwnet = ml_collections.ConfigDict()
  c.mwnet.hidden = 100  # V-net 1 -> hidden -> 1, sigmoid output
  c.mwnet.lr = 1e-5
  c.mwnet.momentum = 0.9
  c.mwnet.nesterov = True
  c.mwnet.weight_decay = 5e-4

  c.l2rw = ml_collections.ConfigDict()

  c.cbmeta = ml_collections.ConfigDict()
  c.cbmeta.start_epoch = 160  # plain base loss before, w_y + eps from this epoch on
  c.cbmeta.tau = 0.01  # step size of eps: eps = -tau d L_meta / d eps at eps = 0
  c.cbmeta.lookahead_reduction = "sum"  # sum (official code) | mean (paper)
  c.cbmeta.clip_weights = False  # clip w_y + eps_i at 0 (paper-style) or not (official code)

  c.mfm = ml_collections.ConfigDict()
  c.mfm.points = ("block3",)  # modulated points of the model (ResNet: blockK, blockK_conv; LeNet: convK, fc1)
  c.mfm.generator = "network"  # network (modulator M_phi on the soft label) | per_sample (free phi_i)
  c.mfm.variant = "mfm"  # mfm (gamma = C softmax, beta free) | film | channel_attention | gated_attention
  c.mfm.zero_beta = False  # ablation beta := 0
  c.mfm.unit_gamma = False  # ablation gamma := 1
  c.mfm.hidden = 100  # hidden units of M_phi
  c.mfm.compressed_size = 0  # > 0: weight hashing from this many outputs (e.g. 256)
  c.mfm.optimizer = "adam"  # adam | sgd, for phi (per_sample tables always use plain SGD)
  c.mfm.lr = 1e-3  # eta, fixed
  c.mfm.load_modulator = ""  # a run's workdir (or its modulator/ folder): train with it frozen
  c.mfm.tsne_samples = 1000  # test samples in the gamma / beta t-SNE plots (0 = none)

  if arg:
    apply_args(c, arg)
  return c


def apply_args(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the comma-separated words after ``:`` in ``--config=FILE:ARGS`` (only ``smoke`` now)."""
  for word in filter(None, (w.strip() for w in arg.split(","))):
    if word != "smoke":
      raise ValueError(f"unknown config argument {word!r}; expected 'smoke'")
    smoke(c)
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config so a run ends in under a minute on 2 CPU cores (digits data, tiny model)."""
  c.dataset.name = "digits"
  c.dataset.source = "digits"
  c.dataset.imbalance = min(c.dataset.imbalance, 10.0)
  c.meta.per_class = min(c.meta.per_class, 5)
  c.meta.batch_size = min(c.meta.batch_size, 50)
  if c.model.name.startswith("resnet"):
    c.model.name = "resnet8"
    c.model.width = 4
  elif c.model.name == "lenet":
    c.model.width = 4
    c.dataset.image_size = 28
  c.train.batch_size = 32
  c.train.epochs = 3
  c.train.eval_batch_size = 256
  c.optim.warmup_epochs = min(c.optim.warmup_epochs, 1)
  c.optim.decay_epochs = (2,)
  c.augment.pad = 1
  c.augment.mean, c.augment.std = (), ()  # digits have one channel: statistics from the data
  c.cbmeta.start_epoch = min(c.cbmeta.start_epoch, 1)
  c.mfm.hidden = min(c.mfm.hidden, 16)
  c.mfm.tsne_samples = min(c.mfm.tsne_samples, 100)
  if c.loss.drw_epoch > 0:
    c.loss.drw_epoch = 1
  return c
