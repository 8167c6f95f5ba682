"""lt_jax.reproduce: paper-number parsing, row selection, skip-complete, formatting, commands, a run."""

import json
import os
import pathlib
import shlex

import pytest

from launch import sweep
from lt_jax import compare
from lt_jax import paper_results
from lt_jax import reproduce
from lt_jax import reproduce_tables as tables_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
PAPER_FILE = next((p for p in (REPO.parent / "shared/reference/paper-results.md",
                               pathlib.Path("/work/shared/reference/paper-results.md")) if p.is_file()),
                  None)
needs_paper = pytest.mark.skipif(PAPER_FILE is None, reason="../shared/reference/paper-results.md "
                                 "is not here (it is not part of the repository)")
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.fixture(scope="module")
def paper():
  if PAPER_FILE is None:
    pytest.skip("no paper-results.md")
  return paper_results.load(str(PAPER_FILE))


# ------------------------------------------------------------------------------- paper numbers


@needs_paper
@pytest.mark.parametrize("key,value,std,metric", [
    ("mfm/table1/BaseModel (CE)/C10 IF100", 26.90, None, "error"),
    ("mfm/table1/MFM (development)/C100 IF10", 39.48, None, "error"),
    ("mfm/table1/BBN/C10 IF50", 17.82, None, "error"),
    ("mfm/table2/ResBlock3 with beta := 0", 21.28, None, "error"),
    ("mfm/table2/all three", 21.71, None, "error"),
    ("mfm/table3/F->C/IF200", 24.35, 1.37, "error"),
    ("mfm/table3/C (CE)/IF100", 26.90, 0.72, "error"),
    ("mfm/table5/MFM/T2 IF10", 9.62, None, "error"),
    ("mfm/table5/MW-Net/T1 IF50", 31.11, None, "error"),
    ("mfm/table6/FC1", 22.32, None, "error"),
    ("mfm/table6/gamma := 1", 23.24, None, "error"),
    ("jamal/CIFAR-10-LT/ours+LDAM/IF200", 22.77, None, "error"),
    ("jamal/CIFAR-10-LT/MW-Net/IF100", 26.43, None, "error"),
    ("jamal/CIFAR-100-LT/CE/IF1", 29.50, None, "error"),
    ("fsa/CIFAR-10-LT/ResNet-18/FSA/IF100", 80.57, None, "accuracy"),
    ("fsa/CIFAR-10-LT/ResNet-34/baseline/IF200", 71.42, None, "accuracy"),
    ("fsa/CIFAR-100-LT/ResNet-34/FSA/IF10", 65.29, None, "accuracy"),
])
def test_known_paper_values(paper, key, value, std, metric):
  got = paper[key]
  assert (got.value, got.std, got.metric) == (value, std, metric)
  line = PAPER_FILE.read_text().splitlines()[got.line - 1]
  assert got.text.split("+-")[0] in line  # the line it says it came from holds the number


@needs_paper
def test_dash_cells_are_absent_and_accuracy_shown_as_error(paper):
  assert "jamal/CIFAR-10-LT/MW-Net/IF200" not in paper  # written "-"
  assert "jamal/CIFAR-10-LT/LDAM-DRW/IF50" not in paper
  fsa = paper["fsa/CIFAR-10-LT/ResNet-34/FSA/IF10"]  # accuracy 91.2
  assert fsa.as_error() == pytest.approx(8.8)
  assert fsa.display() == "8.8 (acc 91.2)"
  assert paper["mfm/table3/C->F/IF100"].display() == "12.79 +- 0.35"


@needs_paper
def test_every_row_key_resolves_except_the_papers_dashes(paper):
  text = PAPER_FILE.read_text()
  unresolved = {key for name in tables_lib.TABLES for row in tables_lib.get_table(name).rows
                for key in row.paper if key not in paper}
  assert unresolved  # the Jamal table has "-" cells
  for key in unresolved:  # each is a "-" of a Jamal slash list, not a typo in a row definition
    assert key.startswith("jamal/"), key
    row_prefix = key.rsplit("/", 1)[0] + "/"
    assert any(k.startswith(row_prefix) for k in paper), key  # the row exists, only this cell not
    assert f"{key.split('/')[2]} -/" in text or "/-/" in text, key


def test_parse_synthetic_file():
  text = "\n".join([
      "# title", "", "## 1. Meta Feature Modulator (MFM), Wang et al.", "",
      "Table 1 (error %):", "", "| method | C10 IF100 | C10 IF50 |", "|---|---|---|",
      "| CE | 26.90 | 1.5+-0.25 |", "",
      "Table 2, ablation (error %): Base 26.90; modulate X (a, b) 19.5, Y 3.", "",
      "## 3. Class-balanced meta re-weighting (Jamal et al.)", "",
      "CIFAR-10-LT (IF 200/100): CE 34.32/-; ours 29.34/23.59.",
      "CIFAR-100-LT: CE 65.16/61.68. ImageNet-LT top-1 error: CE 74.74, ours 70.10.",
  ])
  values = paper_results.parse(text)
  assert values["mfm/table1/CE/C10 IF100"].value == 26.90
  assert (values["mfm/table1/CE/C10 IF50"].value, values["mfm/table1/CE/C10 IF50"].std) == (1.5, 0.25)
  assert values["mfm/table2/modulate X (a, b)"].value == 19.5
  assert values["mfm/table2/Y"].text == "3"
  assert values["jamal/CIFAR-10-LT/ours/IF100"].value == 23.59
  assert "jamal/CIFAR-10-LT/CE/IF100" not in values
  assert values["jamal/CIFAR-100-LT/CE/IF200"].value == 65.16  # IF list inherited
  assert values["jamal/CIFAR-10-LT/CE/IF200"].line == 15
  assert not any("ImageNet" in k for k in values)
  with pytest.raises(paper_results.PaperResultsError, match="keys under 'mfm/table1'"):
    paper_results.lookup(values, "mfm/table1/nope")


def test_missing_paper_file_is_a_clear_error(tmp_path):
  with pytest.raises(paper_results.PaperResultsError, match="not found"):
    paper_results.load(str(tmp_path / "absent.md"))


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
    tables_lib.get_table("table9")


def test_select_rows_default_all_patterns_and_errors():
  table = tables_lib.get_table("mfm_table1")
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
  table = tables_lib.get_table("mfm_table3")
  picked = [row.name for row in reproduce.select_rows(table, "c-from-f-if50,f-from-c-if10")]
  assert picked == ["src-c-if200", "src-f-if200", "c-from-f-if50", "f-from-c-if10"]  # table order
  for row in reproduce.select_rows(table):
    assert set(row.needs) <= {"src-c-if200", "src-f-if200"}


def test_a_needed_row_listed_later_still_runs_first(monkeypatch):
  late = tables_lib.Row("src", "source", "x", "configs/mfm_cifar_dev.py", ())
  user = tables_lib.Row("use", "user", "x", "configs/mfm_cifar_dev.py",
                        (("mfm.load_modulator", "{workdir:src}"),))
  other = tables_lib.Row("other", "other", "x", "configs/ce_cifar.py", (), optional=True)
  table = fake_table(monkeypatch, [user, other, late])
  assert user.needs == ("src",)
  assert [r.name for r in reproduce.select_rows(table, "use")] == ["src", "use"]
  assert [r.name for r in reproduce.select_rows(table)] == ["src", "use"]
  assert tables_lib.resolve_refs("{workdir:src}/x", lambda n: f"/r/{n}/seed0") == "/r/src/seed0/x"
  broken = tables_lib.Table("bad", "bad", "", (user,))
  monkeypatch.setitem(tables_lib.TABLES, "bad", lambda: broken)
  with pytest.raises(ValueError, match=r"needs rows \['src'\]"):
    tables_lib.get_table("bad")


def test_table2_rows_come_from_the_sweep():
  table = tables_lib.get_table("mfm_table2")
  swept = [name for name, _ in sweep.sweep_rows("configs/mfm_cifar_dev.py")]
  assert [row.name for row in table.rows] == ["ce", *swept]
  assert all(row.paper for row in table.rows)  # every sweep row has its Table 2 label


# ---------------------------------------------------------------------------------- commands


def test_dry_run_commands(tmp_path, capsys):
  opts = reproduce.Options(str(tmp_path), "baselines")
  assert reproduce.reproduce("baselines", opts, rows="ce-c10-if100", seeds=2, dry_run=True) == 0
  lines = capsys.readouterr().out.splitlines()
  workdir = tmp_path / "baselines" / "ce-c10-if100"
  assert lines == [shlex.join([
      "python", "-m", "lt_jax.main", "--config=configs/ce_cifar.py", f"--workdir={workdir}/seed{k}",
      "--config.dataset.name=cifar10", "--config.dataset.source=folder",
      "--config.dataset.path=../shared/data/cifar10-jpeg.zip", "--config.dataset.imbalance=100.0",
      f"--config.seed={k}"]) for k in (0, 1)]
  assert not (tmp_path / "baselines").exists()  # a dry run writes nothing


def test_smoke_commands_keep_digits_and_cap_imbalance(tmp_path):
  table = tables_lib.get_table("mfm_table3")
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
    reproduce.trainer_args(row, 0, reproduce.Options(str(tmp_path), "t", extra=("epochs",)))


@pytest.mark.parametrize("name", list(tables_lib.TABLES))
def test_every_row_parses_at_smoke_and_full_scale(tmp_path, name):
  table = tables_lib.get_table(name)
  for smoke in (False, True):
    opts = reproduce.Options(str(tmp_path), name, smoke=smoke)
    for row in table.rows:
      if not reproduce.config_missing(row):
        config = reproduce.parse_config(reproduce.trainer_args(row, 0, opts))
        assert config.dataset.source == ("digits" if smoke else
                                         {"cifar10": "folder"}.get(row.data, "tfds")), row.name
        for key, value in row.overrides:
          value = tables_lib.resolve_refs(value, lambda n: f"{tmp_path}/{name}/{n}/seed0")
          if key != "dataset.imbalance" or not smoke:
            assert sweep._get(config, key) == value, (name, row.name, key)  # pylint: disable=protected-access


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
  table = tables_lib.Table("fake", "A fake table", "nowhere", tuple(rows))
  monkeypatch.setitem(tables_lib.TABLES, "fake", lambda: table)
  tables_lib.get_table.cache_clear()
  return table


@needs_paper
def test_complete_seeds_are_skipped_and_reported(tmp_path, monkeypatch, no_training):
  rows = [tables_lib.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),),
                         paper=("mfm/table1/BaseModel (CE)/C10 IF100",)),
          tables_lib.Row("focal", "focal", "C10 IF100", "configs/focal_cifar.py", (),
                         paper=("mfm/table1/Focal/C10 IF100", "jamal/CIFAR-10-LT/focal/IF100")),
          tables_lib.Row("ghost", "ghost", "x", "configs/does_not_exist.py", (), paper=())]
  fake_table(monkeypatch, rows)
  opts = reproduce.Options(str(tmp_path), "fake")
  for seed, (final, best) in enumerate([(30.0, 29.0), (32.0, 30.0), (34.0, 31.0)]):
    args = reproduce.trainer_args(rows[0], seed, opts)
    config = reproduce.parse_config(args).to_dict()
    fake_run(reproduce.workdir_of(str(tmp_path), "fake", "ce", seed), config, final, best)
  status = reproduce.reproduce("fake", opts, seeds=3, paper_file=str(PAPER_FILE))
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


@needs_paper
def test_mismatched_workdir_is_not_trained_on(tmp_path, monkeypatch, no_training):
  rows = [tables_lib.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),))]
  fake_table(monkeypatch, rows)
  opts = reproduce.Options(str(tmp_path), "fake")
  config = reproduce.parse_config(reproduce.trainer_args(rows[0], 0, opts)).to_dict()
  config["optim"]["lr"] = 0.5
  fake_run(reproduce.workdir_of(str(tmp_path), "fake", "ce", 0), config, 20.0, 19.0)
  reproduce.reproduce("fake", opts, seeds=1, paper_file=str(PAPER_FILE))
  assert not no_training
  text = (tmp_path / "fake" / "results.md").read_text()
  assert "workdir holds another config (optim.lr: 0.5 != 0.1)" in text
  assert "20.00" not in text


# ------------------------------------------------------------------------------------ real run


@needs_paper
def test_tiny_real_run_then_skip_then_compare(tmp_path, monkeypatch, capsys):
  rows = [tables_lib.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (("dataset.imbalance", 100.0),),
                         paper=("mfm/table1/BaseModel (CE)/C10 IF100",))]
  fake_table(monkeypatch, rows)
  root = str(tmp_path)
  argv = ["fake", f"--workdir={root}", "--smoke", "--seeds=1", "--set=train.epochs=1",
          "--set=train.plots=False", f"--paper_results={PAPER_FILE}"]
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


def test_a_replicas_run_counts_each_replica(tmp_path):
  """``--set=replicas=3 --seeds=1``: one program, three models, mean +- std over them."""
  row = tables_lib.Row("ce", "CE", "C10 IF100", "configs/ce_cifar.py", (), paper=())
  opts = reproduce.Options(str(tmp_path), "fake")
  workdir = reproduce.workdir_of(str(tmp_path), "fake", "ce", 0)
  fake_run(workdir, {"seed": 0}, 0.0, 0.0)
  replicas = [{"final_top1_error": e, "best_top1_error": e - 1, "final_epoch": 3} for e in (30.0, 32.0, 34.0)]
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"final_top1_error": 32.0, "replicas": replicas}, f)
  result = reproduce.collect(row, 1, opts)
  assert [s["final_top1_error"] for s in result.summaries] == [30.0, 32.0, 34.0]
  assert reproduce.format_mean_std([s["final_top1_error"] for s in result.summaries]) == "32.00 +- 2.00"
