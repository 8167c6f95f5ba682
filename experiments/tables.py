"""The papers' tables as data: for each table, its rows as (name, config file, overrides, paper key).

One place lists what ``python -m experiments.reproduce TABLE`` runs. A ``Row`` names a config file
in ``configs/``, the ``--config.*`` overrides that make it this row (imbalance factor, method switch,
test set, ...), the kind of data it reads (``data``: the runner adds the data-source overrides, e.g.
a folder copy of CIFAR-10) and the keys of its published numbers in
``experiments/paper_numbers/*.csv`` (``experiments.paper_results``). Rows may refer to another row's
workdir with ``{workdir:ROW}`` in an override value (MFM Table 3: a frozen modulator learned by a
source run); ``needs`` lists them.

MIT-67 rows (MFM Table 4) read a user's MIT-67 folder and converted ImageNet VGG-11 weights
(``experiments.reproduce --mit67=ROOT --vgg11=WEIGHTS``). Rows marked ``optional`` (CIFAR-100, which needs the TFDS data; ResNet-34 FSA) run only when
``--rows`` names them or says ``all``. Paper numbers are never written here, only their keys.
"""

import dataclasses
import functools
import re
from typing import Any, Callable

from launch import sweep

CIFAR10 = "cifar10"
CIFAR100 = "cifar100"
FASHION_MNIST = "fashion_mnist"
MIT67 = "mit67"  # a user's MIT-67 folder and converted VGG-11 weights (no TFDS copy)
DATA_KINDS = (CIFAR10, CIFAR100, FASHION_MNIST, MIT67)
_WORKDIR_REF = re.compile(r"\{workdir:([^}]+)\}")


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a paper table: one config (+ overrides), run once per seed."""
  name: str  # directory name, unique within its table
  method: str  # shown in the results table
  setting: str  # shown in the results table, e.g. "C10 IF100"
  config: str  # config file, relative to the repository root
  overrides: tuple[tuple[str, Any], ...] = ()  # ((config field, value), ...), in order
  data: str = CIFAR10  # which data-source overrides the runner adds (not in --smoke)
  paper: tuple[str, ...] = ()  # keys into experiments.paper_results.load()
  optional: bool = False  # only run when --rows names it (or --rows=all)
  note: str = ""

  @property
  def needs(self) -> tuple[str, ...]:
    """Rows whose workdirs this row's overrides refer to (``{workdir:ROW}``)."""
    found = []
    for _, value in self.overrides:
      if isinstance(value, str):
        found += [n for n in _WORKDIR_REF.findall(value) if n not in found]
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class Table:
  """A paper table: its title, where the published numbers are, notes, rows."""
  name: str
  title: str
  source: str  # where in the papers
  rows: tuple[Row, ...]
  notes: tuple[str, ...] = ()
  compare: bool = False  # write per-class recall / confusion comparison plots


def resolve_refs(value: Any, workdir_of: Callable[[str], str]) -> Any:
  """``value`` with each ``{workdir:ROW}`` replaced by ``workdir_of(ROW)``."""
  if not isinstance(value, str):
    return value
  return _WORKDIR_REF.sub(lambda m: workdir_of(m.group(1)), value)


def _ov(**fields) -> tuple[tuple[str, Any], ...]:
  """``_ov(dataset__imbalance=10.0)`` -> ``(("dataset.imbalance", 10.0),)``."""
  return tuple((k.replace("__", "."), v) for k, v in fields.items())


def _imb(value: float) -> tuple[tuple[str, Any], ...]:
  return (("dataset.imbalance", float(value)),)


# --------------------------------------------------------------------------------------- MFM


_T1_METHODS = (  # (paper row label, slug, config)
    ("BaseModel (CE)", "ce", "configs/ce_cifar.py"),
    ("Focal", "focal", "configs/cui_focal_cifar.py"),  # Cui et al.'s numbers (= Jamal's focal row)
    ("CB", "cb", "configs/cui_cb_focal_cifar.py"),  # 25.43 at C10 IF100 = Jamal's CB-focal (Cui's)
    ("LDAM-DRW", "ldam_drw", "configs/ldam_drw_cifar.py"),
    ("BBN", "bbn", "configs/bbn_cifar.py"),
    ("L2RW", "l2rw", "configs/l2rw_cifar.py"),
    ("MW-Net", "mwnet", "configs/mwnet_cifar.py"),
    ("MFM (meta)", "mfm_meta", "configs/mfm_cifar.py"),
    ("MFM (development)", "mfm_dev", "configs/mfm_cifar_dev.py"),
)
_C10_C100 = ((CIFAR10, "C10", "c10"), (CIFAR100, "C100", "c100"))


def mfm_table1() -> Table:
  rows = []
  for data, short, slug_data in _C10_C100:
    for label, slug, config in _T1_METHODS:
      for imbalance in (100, 50, 10):
        column = f"{short} IF{imbalance}"
        rows.append(Row(f"{slug}-{slug_data}-if{imbalance}", label, column, config, _imb(imbalance),
                        data, (f"mfm/table1/{label}/{column}",), optional=data == CIFAR100))
  return Table("mfm_table1", "MFM Table 1: CIFAR-LT, ResNet-32, top-1 error (%)", "MFM Table 1", tuple(rows), notes=(
                   "CIFAR-100 rows are optional (TFDS `cifar100`; no local copy): `--rows=all` or "
                   "name them. Their configs keep the CIFAR-10 normalisation constants.",))


_T2_SWEEP_LABELS = {  # launch.sweep row name of configs/mfm_cifar_dev.py -> Table 2 label
    "mfm.points-block1": "modulate ResBlock1",
    "mfm.points-block2": "ResBlock2",
    "mfm.points-block3": "ResBlock3",
    "mfm.points-block1+block2+block3": "all three",
    "mfm.zero_beta-True": "ResBlock3 with beta := 0",
    "mfm.unit_gamma-True": "ResBlock3 with gamma := 1",
}


def _sweep_rows(config: str, labels: dict[str, str], table: str, setting: str,
                data: str) -> list[Row]:
  """The rows of a config's ``sweep(add)`` (reusing launch.sweep), labelled from ``labels``."""
  rows = []
  for name, overrides in sweep.sweep_rows(config):
    label = labels.get(name)
    rows.append(Row(name, "MFM " + (label or name), setting, config, tuple(overrides.items()), data,
                    (f"mfm/{table}/{label}",) if label else ()))
  return rows


def mfm_table2() -> Table:
  base = Row("ce", "BaseModel", "C10 IF100", "configs/ce_cifar.py", (), CIFAR10,
             ("mfm/table2/BaseModel",))
  rows = [base, *_sweep_rows("configs/mfm_cifar_dev.py", _T2_SWEEP_LABELS, "table2", "C10 IF100",
                             CIFAR10)]
  return Table("mfm_table2", "MFM Table 2: ablations on CIFAR-10-LT IF 100 (development meta data)",
               "MFM Table 2", tuple(rows), notes=(
                   "Rows come from `sweep()` in configs/mfm_cifar_dev.py (launch/sweep.py names them).",))


def mfm_table3() -> Table:
  """MFM Table 3. F->F and C->C are ordinary MFM runs ("F->F as MFM", "MFM with an updating
  modulator network on F during training", MFM line 184 / 193; C->C at IF 100/50/10 is Table 1's
  "Ours (development)"); C->F and F->C freeze the modulator learned "on one dataset under an
  imbalance factor of 200" (line 193), i.e. by the IF-200 C->C / F->F runs, which are the sources."""
  src_c = Row("src-c-if200", "C->C", "IF200", "configs/mfm_cifar_dev.py", _imb(200), CIFAR10,
              ("mfm/table3/C->C/IF200",), note="also the source: its modulator is frozen in F->C")
  src_f = Row("src-f-if200", "F->F", "IF200", "configs/mfm_fmnist_r32.py", _imb(200), FASHION_MNIST,
              ("mfm/table3/F->F/IF200",), note="also the source: its modulator is frozen in C->F")
  rows = [src_c, src_f]
  load_c = (("mfm.load_modulator", "{workdir:src-c-if200}"),)
  load_f = (("mfm.load_modulator", "{workdir:src-f-if200}"),)
  erm = _ov(method="erm", meta__strategy="none")
  for imbalance in (200, 100, 50, 10):
    column = f"IF{imbalance}"
    rows.append(Row(f"f-ce-if{imbalance}", "F (CE)", column, "configs/mfm_fmnist_r32.py",
                    erm + _imb(imbalance), FASHION_MNIST, (f"mfm/table3/F (CE)/{column}",)))
    if imbalance != 200:  # F->F IF200 is src-f-if200
      rows.append(Row(f"f-from-f-if{imbalance}", "F->F", column, "configs/mfm_fmnist_r32.py",
                      _imb(imbalance), FASHION_MNIST, (f"mfm/table3/F->F/{column}",)))
    rows += [
        Row(f"f-from-c-if{imbalance}", "C->F", column, "configs/mfm_fmnist_r32.py",
            _imb(imbalance) + load_c, FASHION_MNIST, (f"mfm/table3/C->F/{column}",)),
        Row(f"c-ce-if{imbalance}", "C (CE)", column, "configs/ce_cifar.py", _imb(imbalance),
            CIFAR10, (f"mfm/table3/C (CE)/{column}",)),
    ]
    if imbalance != 200:  # C->C IF200 is src-c-if200
      rows.append(Row(f"c-from-c-if{imbalance}", "C->C", column, "configs/mfm_cifar_dev.py",
                      _imb(imbalance), CIFAR10, (f"mfm/table3/C->C/{column}",)))
    rows.append(Row(f"c-from-f-if{imbalance}", "F->C", column, "configs/mfm_cifar_dev.py",
                    _imb(imbalance) + load_f, CIFAR10, (f"mfm/table3/F->C/{column}",)))
  return Table("mfm_table3", "MFM Table 3: modulator transfer (ResNet-32; C->F / F->C frozen, "
               "learned at IF 200)", "MFM Table 3", tuple(rows), notes=(
                   "F->F and C->C are ordinary MFM runs at each IF (the modulator learns during "
                   "training); C->C at IF 100/50/10 is Table 1's MFM (development). The IF-200 "
                   "F->F / C->C runs (src-*) are the sources whose modulators C->F / F->C freeze.",
                   "Seed k of a transfer row loads the modulator of seed k of its source row "
                   "(`mfm.load_modulator=ROOT/mfm_table3/src-*/seed{k}`); sources run first.",
                   "F = Fashion-MNIST-LT with ResNet-32 (configs/mfm_fmnist_r32.py: 'the same "
                   "settings in Section 4.1', i.e. the CIFAR recipe of configs/mfm_cifar_dev.py).",))


def mfm_table5() -> Table:
  methods = (("BaseModel", "ce", "configs/ce_cifar.py"), ("MW-Net", "mwnet", "configs/mwnet_cifar.py"),
             ("MFM", "mfm_dev", "configs/mfm_cifar_dev.py"))
  rows = []
  for label, slug, config in methods:
    for test, short in (("test1", "T1"), ("test2", "T2")):
      for imbalance in (100, 50, 10):
        column = f"{short} IF{imbalance}"
        overrides = _imb(imbalance) + _ov(dataset__test=test, dataset__test_imbalance=10.0)
        rows.append(Row(f"{slug}-{test}-if{imbalance}", label, column, config, overrides, CIFAR10,
                        (f"mfm/table5/{label}/{column}",)))
  return Table("mfm_table5", "MFM Table 5: imbalanced test sets (train C10-LT at IF, test IF 10)",
               "MFM Table 5 (appendix C)", tuple(rows), notes=(
                   "MFM rows use the development meta data (configs/mfm_cifar_dev.py); the paper "
                   "does not say which.",))


def mfm_table4() -> Table:
  """MFM Table 4 (MIT-67): the rows lt_jax has configs for (BaseModel, Ours, Ours with WH-layer);
  the recipe is the paper's (MFM lines 204, 315; configs/large_scale.py DATASETS['mit67'])."""
  rows = (
      Row("ce", "BaseModel", "MIT-67", "configs/ce_mit67.py", (), MIT67, ("mfm/table4/BaseModel",)),
      Row("mfm", "MFM (Ours)", "MIT-67", "configs/mfm_mit67.py", (), MIT67, ("mfm/table4/Ours",)),
      Row("mfm_wh", "MFM (Ours, with WH-layer)", "MIT-67", "configs/mfm_mit67_wh.py", (), MIT67,
          ("mfm/table4/Ours (with WH-layer)",)),
  )
  return Table("mfm_table4", "MFM Table 4: MIT-67 scene recognition, pretrained VGG-11, top-1 "
               "error (%)", "MFM Table 4", rows, notes=(
                   "Needs the user's MIT-67 (`--mit67=ROOT`: ROOT/Images/<class>/*.jpg with the "
                   "60/40 split lists that `python -m lt_jax.data.mit67 ROOT` writes once) and "
                   "ImageNet VGG-11 weights converted for `vgg11_gap` (`--vgg11=WEIGHTS`: `python -m "
                   "lt_jax.models.convert_torchvision vgg11.pth WEIGHTS --arch=vgg11_gap`).",
                   "The paper's split was never published: ours is seeded per class, so the "
                   "numbers compare with the paper's only up to the split.",
                   "Focal, CB, CoSen CNN, L2RW and MW-Net (rows 2-6) have no MIT-67 config here.",))


_T6_SWEEP_LABELS = {  # launch.sweep row name of configs/mfm_fmnist.py -> Table 6 label
    "mfm.points-conv1": "modulating Conv1",
    "mfm.points-conv2": "Conv2",
    "mfm.points-conv3": "Conv3",
    "mfm.points-fc1": "FC1",
    "mfm.points-conv1+conv2+conv3+fc1": "all",
    "mfm.zero_beta-True": "beta := 0",
    "mfm.unit_gamma-True": "gamma := 1",
}


def mfm_table6() -> Table:
  base = Row("erm", "BaseModel", "F IF1000", "configs/mfm_fmnist.py",
             _ov(method="erm", meta__strategy="none"), FASHION_MNIST, ("mfm/table6/BaseModel",))
  rows = [base, *_sweep_rows("configs/mfm_fmnist.py", _T6_SWEEP_LABELS, "table6", "F IF1000",
                             FASHION_MNIST)]
  return Table("mfm_table6", "MFM Table 6: Fashion-MNIST-LT IF 1000, modified LeNet",
               "MFM Table 6 (appendix C.3)", tuple(rows), notes=(
                   "Rows come from `sweep()` in configs/mfm_fmnist.py; TFDS `fashion_mnist`.",))


# --------------------------------------------------------------------------------- Jamal et al.


_JAMAL_METHODS = (  # (paper label, slug, config, overrides)
    ("CE", "ce", "configs/ce_cifar.py", ()),
    ("CB-CE", "cb_ce", "configs/cui_cb_ce_cifar.py", ()),
    ("MW-Net", "mwnet", "configs/mwnet_cifar.py", ()),
    ("ours+CE", "cbmeta_ce", "configs/cbmeta_cifar.py", ()),
    ("focal", "focal", "configs/cui_focal_cifar.py", ()),
    ("CB-focal", "cb_focal", "configs/cui_cb_focal_cifar.py", ()),
    ("ours+focal", "cbmeta_focal", "configs/cbmeta_focal_cifar.py", ()),
    ("LDAM-DRW", "ldam_drw", "configs/ldam_drw_cifar.py", ()),
    ("ours+LDAM", "cbmeta_ldam", "configs/cbmeta_ldam_cifar.py", ()),
)
_JAMAL_C100 = ("CE", "ours+CE", "ours+focal", "LDAM-DRW")  # rows the paper gives for CIFAR-100


def jamal_cifar10() -> Table:
  rows = []
  for data, dataset, slug_data in ((CIFAR10, "CIFAR-10-LT", "c10"), (CIFAR100, "CIFAR-100-LT", "c100")):
    for label, slug, config, overrides in _JAMAL_METHODS:
      if data == CIFAR100 and label not in _JAMAL_C100:
        continue
      for imbalance in (200, 100, 50, 20, 10, 1):
        rows.append(Row(f"{slug}-{slug_data}-if{imbalance}", label, f"{slug_data.upper()} IF{imbalance}",
                        config, overrides + _imb(imbalance), data,
                        (f"jamal/{dataset}/{label}/IF{imbalance}",), optional=data == CIFAR100))
  return Table("jamal_cifar10", "Jamal et al. (class-balanced meta re-weighting): CIFAR-LT, top-1 "
               "error (%)", "Jamal et al. slides, CIFAR-LT-10 / -100 classification error", tuple(rows), notes=(
                   "Baselines (CE, CB-CE, focal, CB-focal, LDAM-DRW) use the LDAM-DRW repo recipe of "
                   "configs/ce_cifar.py (that of Cui et al., whose numbers the paper quotes); CB-CE, "
                   "focal and CB-focal use Cui et al.'s losses (configs/cui_*.py: the batch's sum / "
                   "B, sigmoid focal with gamma 1.0). The 'ours+' rows use the official Jamal recipe "
                   "(configs/cbmeta_*.py).",
                   "CIFAR-100 rows are optional (TFDS `cifar100`).",))


# ------------------------------------------------------------------------------------------ FSA


_FSA_MODELS = (  # (slug, config, model in the paper's heading or None)
    ("r18", "configs/fsa_cifar_r18.py", "ResNet-18"),
    ("r32", "configs/fsa_cifar.py", None),
    ("r34", "configs/fsa_cifar_r34.py", "ResNet-34"),
)


def _fsa_pair(slug, config, model, data, imbalance, optional) -> list[Row]:
  """Phase I alone (the paper's baseline: its config with method=erm) and FSA reusing it."""
  tag = "c10" if data == CIFAR10 else "c100"
  column = f"{tag.upper()} IF{imbalance}"
  base_name = f"ce_{slug}-{tag}-if{imbalance}"
  table = "table1" if data == CIFAR10 else "table2"  # the paper's CIFAR-10 and CIFAR-100 tables
  key = f"fsa/{table}/{{}}/{model} IF{imbalance}" if model else None
  label = model or "ResNet-32"
  return [
      Row(base_name, f"baseline (phase I, {label})", column, config,
          _ov(method="erm") + _imb(imbalance), data, (key.format("baseline"),) if key else (),
          optional=optional),
      Row(f"fsa_{slug}-{tag}-if{imbalance}", f"FSA ({label})", column, config,
          _imb(imbalance) + (("fsa.phase1_workdir", f"{{workdir:{base_name}}}"),), data,
          (key.format("FSA"),) if key else (), optional=optional),
  ]


def fsa_cifar10() -> Table:
  rows = []
  for imbalance in (10, 20, 50, 100, 200):
    for slug, config, model in _FSA_MODELS:
      rows += _fsa_pair(slug, config, model, CIFAR10, imbalance, False)
  for imbalance in (10, 20, 50, 100, 200):
    for slug, config, model in _FSA_MODELS[::2]:
      rows += _fsa_pair(slug, config, model, CIFAR100, imbalance, True)
  return Table("fsa_cifar10", "FSA (Chu et al.): CIFAR-LT; the paper reports accuracy, shown as "
               "error = 100 - accuracy", "FSA Tables 1 and 2", tuple(rows), notes=(
                   "The baseline row of each pair is the FSA config's phase I run alone "
                   "(`method=erm`: 300 epochs, lr x0.1 at 150); the FSA row fine-tunes on it "
                   "(`fsa.phase1_workdir`), so phase I is trained once per seed.",
                   "CIFAR-100 rows are optional (TFDS `cifar100`).",))


# ------------------------------------------------------------------------------ baselines etc.


def baselines() -> Table:
  methods = (  # (label, slug, config, MFM Table 1 label, Jamal label)
      ("CE", "ce", "configs/ce_cifar.py", "BaseModel (CE)", "CE"),
      ("focal", "focal", "configs/cui_focal_cifar.py", "Focal", "focal"),
      ("CB-focal", "cb_focal", "configs/cui_cb_focal_cifar.py", "CB", "CB-focal"),
      ("CB-CE", "cb_ce", "configs/cui_cb_ce_cifar.py", None, "CB-CE"),
      ("LDAM-DRW", "ldam_drw", "configs/ldam_drw_cifar.py", "LDAM-DRW", "LDAM-DRW"),
      ("L2RW", "l2rw", "configs/l2rw_cifar.py", "L2RW", None),
      ("MW-Net", "mwnet", "configs/mwnet_cifar.py", "MW-Net", "MW-Net"),
  )
  rows = []
  for label, slug, config, t1, jamal in methods:
    for imbalance in (100, 50, 10):
      keys = (f"mfm/table1/{t1}/C10 IF{imbalance}",) if t1 else ()
      keys += (f"jamal/CIFAR-10-LT/{jamal}/IF{imbalance}",) if jamal else ()
      rows.append(Row(f"{slug}-c10-if{imbalance}", label, f"C10 IF{imbalance}", config,
                      _imb(imbalance), CIFAR10, keys))
  return Table("baselines", "Baselines the papers compare with: CIFAR-10-LT, ResNet-32",
               "MFM Table 1 and Jamal et al. slides", tuple(rows), notes=(
                   "Where both papers give a number, both are shown ([MFM] / [Jamal]).",
                   "Focal, CB-focal and CB-CE quote Cui et al. 2019 (MFM Table 1's CB = Jamal's "
                   "CB-focal at C10 IF100), so they run Cui's losses (configs/cui_*.py).",))


def competitors() -> Table:
  own = (("BBN", "bbn", "configs/bbn_cifar.py", "BBN"),
         ("logit adjustment", "logit_adjust", "configs/logit_adjust_cifar.py", None),
         ("balanced softmax", "balanced_softmax", "configs/balanced_softmax_cifar.py", None))
  decoupled = (("cRT", "crt", "configs/crt_cifar.py"), ("tau-norm", "tau_norm", "configs/tau_norm_cifar.py"),
               ("LWS", "lws", "configs/lws_cifar.py"))
  rows = []
  for imbalance in (100, 50, 10):
    column = f"C10 IF{imbalance}"
    base = f"ce-c10-if{imbalance}"
    rows.append(Row(base, "CE (phase I of the decoupled rows)", column, "configs/ce_cifar.py",
                    _imb(imbalance), CIFAR10, (f"mfm/table1/BaseModel (CE)/{column}",)))
    for label, slug, config, t1 in own:
      rows.append(Row(f"{slug}-c10-if{imbalance}", label, column, config, _imb(imbalance), CIFAR10,
                      (f"mfm/table1/{t1}/{column}",) if t1 else ()))
    for label, slug, config in decoupled:
      rows.append(Row(f"{slug}-c10-if{imbalance}", label, column, config,
                      _imb(imbalance) + (("decouple.phase1_workdir", f"{{workdir:{base}}}"),), CIFAR10))
  return Table("competitors", "Other long-tailed methods on CIFAR-10-LT", "MFM Table 1 (CE and "
               "BBN; the others have no number there)", tuple(rows), notes=(
                   "cRT, tau-norm and LWS re-use the CE row of the same seed as their phase I "
                   "(`decouple.phase1_workdir`).",))


def if100_compare() -> Table:
  rows = (
      Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", _imb(100), CIFAR10,
          ("mfm/table1/BaseModel (CE)/C10 IF100",)),
      Row("mfm_dev", "MFM (development)", "C10 IF100", "configs/mfm_cifar_dev.py", _imb(100), CIFAR10,
          ("mfm/table1/MFM (development)/C10 IF100",)),
      Row("cbmeta", "class-balanced meta (ours+CE)", "C10 IF100", "configs/cbmeta_cifar.py", _imb(100),
          CIFAR10, ("jamal/CIFAR-10-LT/ours+CE/IF100",)),
      Row("fsa_r18", "FSA (ResNet-18)", "C10 IF100", "configs/fsa_cifar_r18.py", _imb(100), CIFAR10,
          ("fsa/table1/FSA/ResNet-18 IF100",)),
  )
  return Table("if100_compare", "CE vs MFM vs class-balanced meta vs FSA, CIFAR-10-LT IF 100",
               "MFM Table 1, Jamal et al. slides, FSA Table 1", rows, compare=True, notes=(
                   "Per-class recall and confusion matrices of seed 0 of each row: compare/*.png.",))


TABLES: dict[str, Callable[[], Table]] = {
    "mfm_table1": mfm_table1,
    "mfm_table2": mfm_table2,
    "mfm_table3": mfm_table3,
    "mfm_table4": mfm_table4,
    "mfm_table5": mfm_table5,
    "mfm_table6": mfm_table6,
    "jamal_cifar10": jamal_cifar10,
    "fsa_cifar10": fsa_cifar10,
    "baselines": baselines,
    "competitors": competitors,
    "if100_compare": if100_compare,
}


@functools.cache
def get_table(name: str) -> Table:
  """The table called ``name``; ValueError listing the known names otherwise."""
  if name not in TABLES:
    raise ValueError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}")
  table = TABLES[name]()
  names = [row.name for row in table.rows]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"table {name}: duplicate row names {duplicates}")
  for row in table.rows:
    if row.data not in DATA_KINDS:
      raise ValueError(f"table {name}, row {row.name}: data {row.data!r} not in {DATA_KINDS}")
    missing = [n for n in row.needs if n not in names]
    if missing:
      raise ValueError(f"table {name}, row {row.name} needs rows {missing} that the table lacks")
  return table
