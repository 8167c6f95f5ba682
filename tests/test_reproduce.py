"""experiments.reproduce: paper numbers, row selection, skip-complete, formatting, commands, a run."""

import json
import os
import pathlib
import re
import shlex

import pytest

from experiments import compare
from experiments import paper_results
from experiments import reproduce
from experiments import tables
from launch import commands
from launch import sweep

REPO = pathlib.Path(__file__).resolve().parent.parent
PAPERS = REPO.parent / "shared" / "papers"  # the papers' text; not part of the repository
CIFAR10 = "/data/cifar10-jpeg.zip"  # any path: nothing here reads it
MIT67, VGG11 = "/data/mit67", "/data/vgg11.msgpack"  # likewise
# Cells the tables ask for that the Jamal et al. slides leave empty (MW-Net IF200) or write "-".
PAPER_GIVES_NONE = {f"jamal/{dataset}/LDAM-DRW/IF{f}" for dataset in ("CIFAR-10-LT", "CIFAR-100-LT")
                    for f in (200, 50, 20, 1)} | {"jamal/CIFAR-10-LT/MW-Net/IF200"}
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


# ------------------------------------------------------------------------------- paper numbers


@pytest.mark.parametrize("key,value,std,metric", [
    ("mfm/table1/BaseModel (CE)/C10 IF100", 26.90, None, "error"),
    ("mfm/table1/MFM (development)/C100 IF10", 39.48, None, "error"),
    ("mfm/table1/BBN/C10 IF50", 17.82, None, "error"),
    ("mfm/table2/ResBlock3 with beta := 0", 21.28, None, "error"),
    ("mfm/table2/all three", 21.71, None, "error"),
    ("mfm/table3/F->C/IF200", 24.35, 1.37, "error"),
    ("mfm/table3/C (CE)/IF100", 26.90, 0.72, "error"),
    ("mfm/table4/BaseModel", 28.54, None, "error"),
    ("mfm/table4/Ours (with WH-layer)", 24.20, None, "error"),
    ("mfm/table5/MFM/T2 IF10", 9.62, None, "error"),
    ("mfm/table5/MW-Net/T1 IF50", 31.11, None, "error"),
    ("mfm/table6/FC1", 22.32, None, "error"),
    ("mfm/table6/gamma := 1", 23.24, None, "error"),
    ("jamal/CIFAR-10-LT/ours+LDAM/IF200", 22.77, None, "error"),
    ("jamal/CIFAR-10-LT/MW-Net/IF100", 26.43, None, "error"),
    ("jamal/CIFAR-10-LT/CE/IF1", 7.53, None, "error"),  # the slides: "7.53/7.11*"
    ("jamal/CIFAR-100-LT/CE/IF1", 29.50, None, "error"),
    ("fsa/table1/FSA/ResNet-18 IF100", 80.57, None, "accuracy"),
    ("fsa/table1/baseline/ResNet-34 IF200", 71.42, None, "accuracy"),
    ("fsa/table2/FSA/ResNet-34 IF10", 65.29, None, "accuracy"),
])
def test_known_paper_values(key, value, std, metric):
  got = paper_results.load()[key]
  assert (got.value, got.std, got.metric) == (value, std, metric)


@pytest.mark.skipif(not PAPERS.is_dir(), reason=f"{PAPERS} (the papers' text) is not here")
def test_every_number_stands_on_its_cited_line_in_table_order():
  cited = {}  # (paper, line) -> the numbers citing it, in CSV order
  for key, value in paper_results.load().items():
    line = int(re.search(r"\bline (\d+)\b", value.location).group(1))
    cited.setdefault((key.split("/")[0], line), []).extend(value.text.split("+-"))
  for (paper, line), numbers in cited.items():
    text = (PAPERS / paper_results.PAPERS[paper][0]).read_text().splitlines()[line - 1]
    found = iter(re.findall(r"\d+(?:\.\d+)?", text))
    assert all(n in found for n in numbers), (paper, line, numbers, text)  # a subsequence


def test_every_row_key_is_in_the_data_except_cells_the_paper_leaves_empty():
  values = paper_results.load()
  wanted = {key for name in tables.TABLES for row in tables.get_table(name).rows for key in row.paper}
  assert wanted - set(values) == PAPER_GIVES_NONE
  assert all(key.rsplit("/", 1)[0] + "/IF100" in values for key in PAPER_GIVES_NONE)  # row exists


def test_display_and_bad_data(tmp_path):
  values = paper_results.load()
  assert values["fsa/table1/FSA/ResNet-34 IF10"].display() == "8.8 (acc 91.2)"
  assert values["mfm/table3/C->F/IF100"].display() == "12.79 +- 0.35"
  (tmp_path / "mfm.csv").write_text("table,row,column,value,location\nt,r,c,12.5%,Table 1, line 3\n")
  with pytest.raises(ValueError, match=r"mfm\.csv:2: expected .*MEAN\+-STD"):
    paper_results.load(tmp_path)


# ----------------------------------------------------------------------------------- statistics


def test_mean_std_formatting():
  assert reproduce.format_mean_std([1.0, 2.0, 3.0]) == "2.00 +- 1.00"  # sample std (ddof 1)
  assert reproduce.format_mean_std([24.312]) == "24.31"
  assert reproduce.format_mean_std([]) == "-"
  assert reproduce.format_mean_std([None, 5.0, None]) == "5.00"
  assert reproduce.format_mean_std([10.0, 12.0], 1) == "11.0 +- 1.4"
  with pytest.raises(ValueError):
    reproduce.mean_std([])


# -------------------------------------------------------------------------------- row selection


def test_unknown_table_lists_known_ones():
  with pytest.raises(ValueError, match="known tables: mfm_table1, .*baselines"):
    tables.get_table("table9")


def test_select_rows_default_all_patterns_and_errors():
  table = tables.get_table("mfm_table1")
  default = reproduce.select_rows(table)
  assert default and not any(row.optional for row in default)
  assert all("-c10-" in row.name for row in default)
  assert len(reproduce.select_rows(table, "all")) == len(table.rows)
  picked = reproduce.select_rows(table, "mfm_dev-c10-if100,ce-c10-*")
  assert [row.name for row in picked] == ["ce-c10-if100", "ce-c10-if50", "ce-c10-if10",
                                          "mfm_dev-c10-if100"]
  with pytest.raises(reproduce.ReproduceError, match="no row 'nope'.*ce-c10-if100"):
    reproduce.select_rows(table, "nope")


def test_dependencies_are_added_and_run_first():
  table = tables.get_table("mfm_table3")
  picked = [row.name for row in reproduce.select_rows(table, "c-from-f-if50,f-from-c-if10")]
  assert picked == ["src-c-if200", "src-f-if200", "c-from-f-if50", "f-from-c-if10"]  # table order
  for row in reproduce.select_rows(table):
    assert set(row.needs) <= {"src-c-if200", "src-f-if200"}


def test_a_needed_row_listed_later_still_runs_first(monkeypatch):
  late = tables.Row("src", "source", "x", "configs/mfm_cifar_dev.py", ())
  user = tables.Row("use", "user", "x", "configs/mfm_cifar_dev.py",
                        (("mfm.load_modulator", "{workdir:src}"),))
  other = tables.Row("other", "other", "x", "configs/ce_cifar.py", (), optional=True)
  table = fake_table(monkeypatch, [user, other, late])
  assert user.needs == ("src",)
  assert [r.name for r in reproduce.select_rows(table, "use")] == ["src", "use"]
  assert [r.name for r in reproduce.select_rows(table)] == ["src", "use"]
  assert tables.resolve_refs("{workdir:src}/x", lambda n: f"/r/{n}/seed0") == "/r/src/seed0/x"
  broken = tables.Table("bad", "bad", "", (user,))
  monkeypatch.setitem(tables.TABLES, "bad", lambda: broken)
  with pytest.raises(ValueError, match=r"needs rows \['src'\]"):
    tables.get_table("bad")


def test_table2_rows_come_from_the_sweep():
  table = tables.get_table("mfm_table2")
  swept = [name for name, _ in sweep.sweep_rows("configs/mfm_cifar_dev.py")]
  assert [row.name for row in table.rows] == ["ce", *swept]
  assert all(row.paper for row in table.rows)  # every sweep row has its Table 2 label


# ---------------------------------------------------------------------------------- commands


def test_dry_run_commands(tmp_path, capsys):
  opts = reproduce.Options(str(tmp_path), "baselines", cifar10_path=CIFAR10)
  assert reproduce.reproduce("baselines", opts, rows="ce-c10-if100", seeds=2, dry_run=True) == 0
  lines = capsys.readouterr().out.splitlines()
  workdir = tmp_path / "baselines" / "ce-c10-if100"
  assert lines == [shlex.join([
      "python", "-m", "lt_jax.main", "--config=configs/ce_cifar.py", f"--workdir={workdir}/seed{k}",
      "--config.dataset.name=cifar10", "--config.dataset.source=folder",
      f"--config.dataset.path={CIFAR10}", "--config.dataset.imbalance=100.0",
      f"--config.seed={k}"]) for k in (0, 1)]
  assert not (tmp_path / "baselines").exists()  # a dry run writes nothing


def test_cifar10_rows_need_the_flag(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(reproduce.CIFAR10_ENV, raising=False)
  assert reproduce.main(["baselines", "--dry_run", f"--workdir={tmp_path}"]) == 2
  assert "CIFAR-10 rows need --cifar10=PATH" in capsys.readouterr().err
  assert reproduce.main(["mfm_table6", "--dry_run", f"--workdir={tmp_path}"]) == 0  # Fashion-MNIST
  assert reproduce.main(["baselines", "--dry_run", "--cifar10=tfds", "--rows=ce-c10-if10"]) == 0
  assert "--config.dataset.source=tfds" in capsys.readouterr().out
  monkeypatch.setenv(reproduce.CIFAR10_ENV, CIFAR10)
  assert reproduce.main(["baselines", "--dry_run", "--rows=ce-c10-if10"]) == 0
  assert f"--config.dataset.path={CIFAR10}" in capsys.readouterr().out


def test_mit67_rows_need_the_users_folder_and_weights(tmp_path, monkeypatch, capsys):
  for env in (reproduce.MIT67_ENV, reproduce.VGG11_ENV):
    monkeypatch.delenv(env, raising=False)
  assert [r.config for r in tables.get_table("mfm_table4").rows] == [
      "configs/ce_mit67.py", "configs/mfm_mit67.py", "configs/mfm_mit67_wh.py"]
  assert reproduce.main(["mfm_table4", "--dry_run", f"--workdir={tmp_path}", f"--mit67={MIT67}"]) == 2
  err = capsys.readouterr().err
  assert "MIT-67 rows need" in err and "--vgg11=WEIGHTS" in err and "lt_jax.data.mit67" in err
  assert reproduce.main(["mfm_table4", "--dry_run", f"--workdir={tmp_path}", "--rows=mfm_wh",
                         f"--mit67={MIT67}", f"--vgg11={VGG11}"]) == 0
  out = capsys.readouterr().out
  assert f"--config.dataset.path={MIT67}" in out and f"--config.model.init_checkpoint={VGG11}" in out
  assert "--config=configs/mfm_mit67_wh.py" in out


def test_smoke_commands_keep_digits_and_cap_imbalance(tmp_path):
  table = tables.get_table("mfm_table3")
  row = next(r for r in table.rows if r.name == "c-from-f-if100")
  opts = reproduce.Options(str(tmp_path), "mfm_table3", smoke=True, extra=("train.epochs=1",))
  args = reproduce.trainer_args(row, 1, opts)
  assert args[0] == "--config=configs/mfm_cifar_dev.py:smoke"
  assert f"--config.mfm.load_modulator={tmp_path}/mfm_table3/src-f-if200/seed1" in args
  assert not any(a.startswith("--config.dataset.source") for a in args)
  config = reproduce.parse_config(args)
  assert (config.dataset.source, config.dataset.imbalance, config.seed) == ("digits", 10.0, 1)
  assert config.train.epochs == 1
  with pytest.raises(reproduce.ReproduceError, match="FIELD=VALUE"):
    reproduce.trainer_args(row, 0, reproduce.Options(str(tmp_path), "t", extra=("epochs",),
                                                         cifar10_path=CIFAR10))


@pytest.mark.parametrize("name", list(tables.TABLES))
def test_every_row_parses_at_smoke_and_full_scale(tmp_path, name):
  table = tables.get_table(name)
  for smoke in (False, True):
    opts = reproduce.Options(str(tmp_path), name, smoke=smoke, cifar10_path=CIFAR10,
                             mit67_path=MIT67, vgg11_path=VGG11)
    for row in table.rows:
      if not reproduce.config_missing(row):
        config = reproduce.parse_config(reproduce.trainer_args(row, 0, opts))
        if row.data == tables.MIT67:  # the MIT-67 format at both scales (smoke: a miniature)
          assert config.dataset.source == "split_file" and config.model.name == "vgg11_gap", row.name
          assert config.model.init_checkpoint == ("" if smoke else VGG11), row.name
          assert smoke or config.dataset.path == MIT67, row.name
        else:
          assert config.dataset.source == ("digits" if smoke else
                                           {"cifar10": "folder"}.get(row.data, "tfds")), row.name
        for key, value in row.overrides:
          value = tables.resolve_refs(value, lambda n: f"{tmp_path}/{name}/{n}/seed0")
          if key != "dataset.imbalance" or not smoke:
            assert commands.get(config, key) == value, (name, row.name, key)


# ------------------------------------------------------------------------- skip-complete logic


def fake_run(workdir, config, final, best, seconds=(2.0, 3.0)):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for epoch, s in enumerate(seconds, 1):
      f.write(json.dumps({"kind": "train", "epoch": epoch, "step": epoch, "epoch_seconds": s}) + "\n")
  if final is not None:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({"final_top1_error": final, "best_top1_error": best, "final_epoch": 3,
                 "best_epoch": 2, "final_many_accuracy": 90.0, "final_medium_accuracy": 50.0,
                 "final_few_accuracy": None}, f)


def test_run_state(tmp_path):
  config = {"seed": 0, "dataset": {"imbalance": 100.0, "path": "a.zip"}, "mfm": {"points": ["block3"]}}
  assert reproduce.run_state(str(tmp_path / "none"), config) == ("empty", "")
  fake_run(tmp_path / "partial", config, None, None)
  assert reproduce.run_state(str(tmp_path / "partial"), config) == ("partial", "")
  fake_run(tmp_path / "done", config, 30.0, 29.0)
  assert reproduce.run_state(str(tmp_path / "done"), config) == ("complete", "")
  moved = {**config, "dataset": {"imbalance": 100.0, "path": "elsewhere/a.zip"}}  # path ignored
  assert reproduce.run_state(str(tmp_path / "done"), moved)[0] == "complete"
  other = {**config, "dataset": {"imbalance": 50.0}}
  state, detail = reproduce.run_state(str(tmp_path / "done"), other)
  assert state == "mismatch" and "dataset.imbalance: 100.0 != 50.0" in detail


@pytest.fixture
def no_training(monkeypatch):
  calls = []
  monkeypatch.setattr(reproduce, "train_one", lambda args, config, workdir: calls.append(workdir))
  return calls


def fake_table(monkeypatch, rows):
  table = tables.Table("fake", "A fake table", "nowhere", tuple(rows))
  monkeypatch.setitem(tables.TABLES, "fake", lambda: table)
  tables.get_table.cache_clear()
  return table


def test_complete_seeds_are_skipped_and_reported(tmp_path, monkeypatch, no_training):
  rows = [tables.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),),
                         paper=("mfm/table1/BaseModel (CE)/C10 IF100",)),
          tables.Row("focal", "focal", "C10 IF100", "configs/focal_cifar.py", (),
                         paper=("mfm/table1/Focal/C10 IF100", "jamal/CIFAR-10-LT/focal/IF100")),
          tables.Row("ghost", "ghost", "x", "configs/does_not_exist.py", (), paper=())]
  fake_table(monkeypatch, rows)
  opts = reproduce.Options(str(tmp_path), "fake", cifar10_path=CIFAR10)
  for seed, (final, best) in enumerate([(30.0, 29.0), (32.0, 30.0), (34.0, 31.0)]):
    args = reproduce.trainer_args(rows[0], seed, opts)
    config = reproduce.parse_config(args).to_dict()
    fake_run(reproduce.workdir_of(str(tmp_path), "fake", "ce", seed), config, final, best)
  status = reproduce.reproduce("fake", opts, seeds=3)
  assert status == 0
  ran = [os.path.relpath(w, tmp_path) for w in no_training]
  assert ran == [f"fake/focal/seed{k}" for k in range(3)]  # ce complete, ghost has no config
  text = (tmp_path / "fake" / "results.md").read_text()
  ce_line = next(line for line in text.splitlines() if line.startswith("| `ce`"))
  assert "| 26.90 | 32.00 +- 2.00 | 30.00 +- 1.00 | 90.0 / 50.0 / - | 3 (3) | 5 |" in ce_line
  assert "folder cifar10-jpeg.zip (JPEG copy)" in ce_line  # from the run's config.json
  focal_line = next(line for line in text.splitlines() if line.startswith("| `focal`"))
  assert "29.62 [MFM]; 29.62 [Jamal]" in focal_line and "| not run" in focal_line
  ghost_line = next(line for line in text.splitlines() if line.startswith("| `ghost`"))
  assert "config missing (configs/does_not_exist.py)" in ghost_line and "| - | - |" in ghost_line
  assert "JPEG (quality 75) copy" in text and "asked for 3" in text
  assert "NOT comparable" not in text


def test_mismatched_workdir_is_not_trained_on(tmp_path, monkeypatch, no_training):
  rows = [tables.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),))]
  fake_table(monkeypatch, rows)
  opts = reproduce.Options(str(tmp_path), "fake", cifar10_path=CIFAR10)
  config = reproduce.parse_config(reproduce.trainer_args(rows[0], 0, opts)).to_dict()
  config["optim"]["lr"] = 0.5
  fake_run(reproduce.workdir_of(str(tmp_path), "fake", "ce", 0), config, 20.0, 19.0)
  reproduce.reproduce("fake", opts, seeds=1)
  assert not no_training
  text = (tmp_path / "fake" / "results.md").read_text()
  assert "workdir holds another config (optim.lr: 0.5 != 0.1)" in text
  assert "20.00" not in text


# ------------------------------------------------------------------------------------ real run


def test_tiny_real_run_then_skip_then_compare(tmp_path, monkeypatch, capsys):
  rows = [tables.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),),
                         paper=("mfm/table1/BaseModel (CE)/C10 IF100",))]
  fake_table(monkeypatch, rows)
  root = str(tmp_path)
  argv = ["fake", f"--workdir={root}", "--smoke", "--seeds=1", "--set=train.epochs=1",
          "--set=train.plots=False"]
  assert reproduce.main(argv) == 0
  workdir = tmp_path / "fake" / "ce" / "seed0"
  summary = json.loads((workdir / "summary.json").read_text())
  record = json.loads((workdir / "reproduce.json").read_text())
  assert summary["final_epoch"] == 1
  assert "--config=configs/ce_cifar.py:smoke" in record["command"] and "cpu" in record["device"]
  text = (tmp_path / "fake" / "results.md").read_text()
  assert "SMOKE SCALE" in text and "paper (NOT comparable: smoke)" in text
  assert f"| {summary['final_top1_error']:.2f} | {summary['best_top1_error']:.2f} |" in text
  assert "digits (smoke)" in text and "| complete |" in text
  capsys.readouterr()
  monkeypatch.setattr(reproduce, "train_one", lambda *a: pytest.fail("a complete run was re-run"))
  assert reproduce.main(argv) == 0
  assert "[reproduce] ce seed0" not in capsys.readouterr().out
  paths = compare.compare_plots({"CE": str(workdir), "CE again": str(workdir)}, str(tmp_path / "cmp"))
  assert [os.path.basename(p) for p in paths] == ["per_class_recall.png", "confusion.png"]
  assert all(os.path.getsize(p) > 1000 for p in paths)
  with pytest.raises(FileNotFoundError, match="no eval record"):
    compare.compare_plots({"empty": str(tmp_path)}, str(tmp_path / "cmp2"))
  runs = compare.run_labels([f"CE={workdir}", str(workdir)])
  assert runs == {"CE": str(workdir), "seed0": str(workdir)}
  table = compare.summary_table(runs).splitlines()
  assert len(table) == 4 and table[2].startswith(f"| CE | {summary['final_top1_error']:.2f} | ")
  with pytest.raises(ValueError, match="two runs labelled 'seed0'"):
    compare.run_labels([str(workdir), str(workdir)])


def test_a_replicas_run_counts_each_replica(tmp_path):
  """``--set=replicas=3 --seeds=1``: one program, three models, mean +- std over them."""
  row = tables.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (), paper=())
  opts = reproduce.Options(str(tmp_path), "fake", cifar10_path=CIFAR10)
  workdir = reproduce.workdir_of(str(tmp_path), "fake", "ce", 0)
  fake_run(workdir, {"seed": 0}, 0.0, 0.0)
  replicas = [{"final_top1_error": e, "best_top1_error": e - 1, "final_epoch": 3} for e in (30.0, 32.0, 34.0)]
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"final_top1_error": 32.0, "replicas": replicas}, f)
  result = reproduce.collect(row, 1, opts)
  assert [s["final_top1_error"] for s in result.summaries] == [30.0, 32.0, 34.0]
  assert reproduce.format_mean_std([s["final_top1_error"] for s in result.summaries]) == "32.00 +- 2.00"
