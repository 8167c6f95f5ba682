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
  c.method = "erm"  # erm | l2rw | mwnet | cbmeta | mfm | fsa | crt | tau_norm | lws | posthoc_la | bbn
  c.seed = 0  # model init and training randomness (augmentation, batch order)
  c.replicas = 1  # R > 1: R independent models (seeds seed..seed+R-1) vmapped in one program

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
  # Large-scale sources split_file | inat_json | inat_tfds (lt_jax.data.grain_loader): the split
  # ships with the data, so imbalance / profile / protocol do not apply; dataset.path = image root.
  c.dataset.train_list = ""  # split file, iNat JSON or TFDS split; relative to cwd or dataset.path
  c.dataset.val_list = ""  # optional; meta.strategy='meta' draws meta.per_class per class from it
  c.dataset.test_list = ""
  c.dataset.check_files = True  # check that every listed image exists before training
  c.dataset.skip_bad_images = False  # folder source: leave out images that do not decode, listed
  # in data_selection.json ('skipped'); off: the first one stops the run, named
  c.dataset.miniature = ""  # lt_jax.data.miniature format written at dataset.path if absent (:smoke)
  c.dataset.sampler = "instance"  # instance | class_balanced | sqrt | reversed (lt_jax.data.samplers)

  c.meta = ml_collections.ConfigDict()
  c.meta.strategy = "none"  # none | meta (disjoint, from the full split) | development (copies of LT train)
  c.meta.per_class = 10  # M (meta) or K (development, at most n_c) images per class
  c.meta.development = "per_class"  # development copies: per_class = min(K, n_c) | equal = min(K, n_min) each
  c.meta.batch_size = 100  # meta batch size; capped at the meta set size

  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet32"  # resnet{6n+2} (CIFAR, option-A) | resnet18 | resnet34 | lenet | bbn_resnet{6n+2}
  c.model.width = 0  # base width; 0 = the model's own (16 for CIFAR ResNets, 64 for 18/34, 6 LeNet)
  c.model.classifier = "linear"  # linear | cosine (LDAM's normed linear, no bias)
  c.model.bbn_branch_blocks = 1  # bbn_resnet*: last-stage blocks each branch owns (1 = BBN's; n = all of stage 3)
  c.model.bbn_mix_scale = 2.0  # bbn_resnet*: s in z = W^T (s [alpha f_c, (1-alpha) f_r]) + b (2 = BBN code, 1 = paper Eq. 1)
  c.model.sync_batch_norm = False  # BatchNorm statistics over the global batch (all devices), not per device
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
  c.model.init_checkpoint = ""  # converted torchvision weights (lt_jax.models.convert_torchvision)
  c.model.pretrained = False  # True: the row fine-tunes ImageNet weights; init_checkpoint is then required
  c.model.sigmoid_bias_init = False  # classifier bias b = -log(C - 1): sigmoids start at 1/C (Cui et al.)

  c.loss = ml_collections.ConfigDict()
  # ce | focal (LDAM code's, softmax) | sigmoid_focal (Cui et al.'s) | ldam | logit_adjust (CE on
  # z + la_tau log pi) | balanced_softmax (CE on z + log n)
  c.loss.name = "ce"
  c.loss.reweight = "none"  # none | cb (class-balanced, effective number)
  c.loss.cb_beta = 0.9999  # beta of the effective number (1 - beta^n) / (1 - beta)
  # class-weighted mean: weight_sum (sum_i w l_i / sum_i w, PyTorch / LDAM) | batch (/ B, Cui et al.)
  c.loss.cb_reduction = "weight_sum"
  c.loss.drw_epoch = -1  # deferred re-weighting: class weights only from this epoch on; -1 = always
  c.loss.focal_gamma = 1.0  # gamma of the focal losses
  c.loss.ldam_max_m = 0.5  # largest LDAM margin (rarest class)
  c.loss.ldam_s = 30.0  # LDAM logit scale s
  c.loss.la_tau = 1.0  # logit_adjust: tau in CE(z + tau log pi, y), pi the training class prior

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.1  # base learning rate alpha
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 2e-4  # added to the gradient before momentum (PyTorch SGD)
  c.optim.warmup_epochs = 5  # epoch e < W runs at lr * (e + 1) / W (LDAM-DRW)
  c.optim.decay_epochs = (160, 180)  # lr multiplied by decay_factor at each of these epochs
  c.optim.decay_factor = 0.01
  # fnmatch patterns of parameter paths left out of the weight decay, e.g. ('classifier/bias',)
  c.optim.no_decay = ()

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.epochs = 200
  c.train.eval_every_epochs = 1
  c.train.checkpoint_every_epochs = 1
  c.train.keep_checkpoints = 2
  c.train.eval_batch_size = 500
  c.train.steps_per_call = 0  # steps per jitted call; 0 = the whole epoch (one lax.scan) on GPU/TPU, 1 on CPU
  c.train.plots = True  # PNG plots in the workdir at the end
  c.train.log_every_steps = -1  # progress line (steps/s, ETA, loss) every N steps; 0 = off;
  # -1 = every 100 when stderr is not a terminal (cluster logs), else off (tqdm bar)

  c.augment = ml_collections.ConfigDict()
  c.augment.crop = True  # pad + random crop back to the input size
  c.augment.pad = 4
  c.augment.pad_mode = "constant"  # constant (zeros, LDAM) | reflect (MW-Net, Jamal)
  c.augment.flip = True  # random horizontal flip
  c.augment.mean = ()  # per-channel mean in [0, 1]; () = computed from the training images
  c.augment.std = ()

  c.loader = ml_collections.ConfigDict()  # streaming input pipeline (lt_jax.data.grain_loader)
  # True: train from the grain loaders (the streamed feed; dataset.source split_file | inat_json |
  # inat_tfds), batches decoded per step instead of the whole set held on the device
  c.loader.stream = False
  c.loader.workers = -1  # decoding processes; -1 = one per CPU core of this process's affinity (a
  # SLURM task's --cpus-per-task), 0 = in the training process
  c.loader.prefetch = 2  # batches buffered per worker
  c.loader.min_crop_area = 0.08  # random-resized-crop area range [min, 1] of the image
  c.loader.eval_crop_ratio = 0.875  # eval: resize the shorter side to S / ratio, centre crop S

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
  c.cbmeta.lookahead_reduction = "sum"  # sum (official code, slides' update eq.) | mean (slides' Alg. 1)
  c.cbmeta.clip_weights = False  # clip w_y + eps_i at 0 (L2RW's choice; the method and its code do not)
  # meta loss: base (the base loss L, LDAM margins included: slides' Alg. 1 l.12) | scaled_ce
  # (CE on s z, no margins) | ce (CE on the raw outputs, the official CE-only code)
  c.cbmeta.meta_loss = "base"

  c.mfm = ml_collections.ConfigDict()
  c.mfm.points = ("block3",)  # modulated points of the model (ResNet: blockK, blockK_conv; LeNet: convK, fc1)
  c.mfm.generator = "network"  # network (modulator M_phi on the soft label) | per_sample (free phi_i)
  c.mfm.variant = "mfm"  # mfm (gamma = C softmax, beta free) | film | channel_attention | gated_attention
  c.mfm.zero_beta = False  # ablation beta := 0
  c.mfm.unit_gamma = False  # ablation gamma := 1
  c.mfm.hidden = 100  # hidden units of M_phi
  c.mfm.compressed_size = 0  # m > 0: weight hashing, gamma-hat (m) -> gamma and beta-hat (m) -> beta (MIT-67: 256)
  c.mfm.optimizer = "adam"  # adam | sgd, for phi (per_sample tables always use plain SGD)
  c.mfm.lr = 1e-3  # eta, fixed
  c.mfm.load_modulator = ""  # a run's workdir (or its modulator/ folder): train with it frozen
  c.mfm.tsne_samples = 1000  # test samples in the gamma / beta t-SNE plots (0 = none)

  # Phase II on a frozen phase-I network (FSA, decoupled classifiers): see docs/fsa.md, decoupling.md.
  c.fsa = ml_collections.ConfigDict()
  c.fsa.phase1_workdir = ""  # a finished run's workdir; "" = train phase I first in WORKDIR/phase1
  c.fsa.phase1_method = "erm"  # the phase-I method when phase1_workdir is "" (any one-phase method)
  c.fsa.mode = "fsa"  # fsa (synthesised tail features) | balanced (control: half tail, half head, no synthesis)
  c.fsa.tau_s = 0.8  # class-specific part: CAM > tau_s
  c.fsa.tau_g = 0.2  # class-generic part: CAM < tau_g (tau_g < tau_s)
  # paper: CAM = phase-I classifier on the features, Eq. (1), no ReLU | online: the fine-tuned
  # classifier on the batch's maps, ReLU'd (Grad-CAM; the public reimplementation)
  c.fsa.cam = "paper"
  c.fsa.head_ratio = 0.9  # h_r: head = smallest set of largest classes holding >= h_r of the samples
  c.fsa.num_confusing = 3  # N_f confusing classes per tail class
  c.fsa.confusion = "paper"  # paper (top S[t, j]: t's samples score j) | transposed (top S[j, t])
  c.fsa.num_augment = 3  # N_a confusing samples (so synthesised maps) per tail sample
  c.fsa.stage = -1  # augment after this stage; -1 = the last (before pooling); 1, 2, ... earlier (Fig. 9)
  c.fsa.image_augment = False  # crop / flip phase-II images (False: Alg. 1's fixed training features)
  c.fsa.batch_size = 128  # 2 N_t (1 + N_a): N_t = batch_size // (2 (1 + N_a)) tail samples
  c.fsa.steps = 6400  # fine-tuning iterations of the classifier (backbone frozen)
  c.fsa.eval_every = 800  # test evaluation and checkpoint every this many iterations (divides steps)
  c.fsa.lr = 1e-3  # fixed learning rate (schedule constant)
  c.fsa.schedule = "constant"  # constant | cosine
  c.fsa.momentum = 0.9
  c.fsa.weight_decay = 0.0

  c.decouple = ml_collections.ConfigDict()  # method crt | tau_norm | lws (Kang et al. 2020)
  c.decouple.phase1_workdir = ""  # a finished run's workdir; "" = train phase I first in WORKDIR/phase1
  c.decouple.phase1_method = "erm"  # the phase-I method when phase1_workdir is ""
  c.decouple.tau = 1.0  # tau_norm: W_c / ||W_c||^tau (0 = unchanged, 1 = unit norms)
  c.decouple.la_tau = 1.0  # posthoc_la: logits z - la_tau log pi (bias b - la_tau log pi; 0 = unchanged)
  c.decouple.sampler = "class_balanced"  # crt / lws batches: class_balanced | instance (control)
  c.decouple.reinit = True  # crt: re-initialise the classifier before re-training (False: start from phase I's)
  c.decouple.image_augment = True  # crop / flip (phase I's augment fields) on phase-II images
  c.decouple.batch_size = 128
  c.decouple.steps = 1000  # crt / lws iterations (~10 CIFAR-10-LT IF 100 epochs at batch 128); tau_norm: 0
  c.decouple.eval_every = 250  # test evaluation and checkpoint every this many iterations (divides steps)
  c.decouple.lr = 0.05  # Kang et al.'s 0.2 at batch 512, scaled to batch 128
  c.decouple.schedule = "cosine"  # constant | cosine (to 0 over steps)
  c.decouple.momentum = 0.9
  c.decouple.weight_decay = 5e-4

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
  elif c.model.name.startswith("bbn_resnet"):
    c.model.name = "bbn_resnet8"
    c.model.width = 4
    c.model.bbn_branch_blocks = 1
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
  for group in (c.fsa, c.decouple):
    group.batch_size = min(group.batch_size, 32)
    group.steps = min(group.steps, 40)
    group.eval_every = min(group.eval_every, 20)
  if c.loss.drw_epoch > 0:
    c.loss.drw_epoch = 1
  return c
