"""Reproduces a paper table: ``python -m experiments.reproduce TABLE [--flags]``.

For each selected row of TABLE (``experiments.tables``) and each seed k < N, trains the row's
config in ``ROOT/TABLE/ROW/seed{k}`` with ``--config.seed=k`` (``dataset.seed`` stays at the
config's value, so every seed sees the same long-tailed subset), skipping row-seeds whose
``summary.json`` exists, then writes ``ROOT/TABLE/results.md``: our mean +- std over seeds of the
final- and best-epoch top-1 error beside the paper's number (``experiments.paper_results``), the
data source, and the seeds. Rows that read CIFAR-10 need ``--cifar10=PATH`` (a folder or zip of
``split/class/*.jpg``; or ``$LT_JAX_CIFAR10``) or ``--cifar10=tfds``, except with ``--smoke``.
MIT-67 rows (MFM Table 4) need ``--mit67=ROOT`` (``ROOT/Images/<class>/*.jpg`` and the split lists
of ``python -m lt_jax.data.mit67 ROOT``; or ``$LT_JAX_MIT67``) and ``--vgg11=WEIGHTS`` (ImageNet
VGG-11 converted by ``lt_jax.models.convert_torchvision --arch=vgg11_gap``; or ``$LT_JAX_VGG11``).

  python -m experiments.reproduce baselines --cifar10=PATH --workdir=runs/reproduce --seeds=3
  python -m experiments.reproduce mfm_table6 --dry_run     # the equivalent lt_jax.main commands
  python -m experiments.reproduce baselines --smoke --seeds=2 --workdir=/tmp/rp   # CPU check
  python -m experiments.reproduce mfm_table1 --cifar10=tfds --rows=ce-c10-if100,mfm_dev-c10-if100
  python -m experiments.reproduce mfm_table1 --cifar10=PATH --report_only   # rewrite results.md
  python -m experiments.reproduce --list                   # tables and their rows

Run from the repository root (relative paths are relative to it). Each command is exactly what
the in-process run trains: both go through ml_collections' config_flags
(``launch.commands.parse_config_flags``). A workdir whose ``config.json`` disagrees with the row's
config is never trained on or counted (its status says so).
"""

import argparse
import dataclasses
import datetime
import fnmatch
import json
import math
import os
import shlex
import sys
import time
from typing import Any, Sequence

from absl import flags

from experiments import paper_results
from experiments import tables
from launch import commands

CIFAR10_ENV = "LT_JAX_CIFAR10"
MIT67_ENV = "LT_JAX_MIT67"
VGG11_ENV = "LT_JAX_VGG11"
TFDS = "tfds"  # --cifar10=tfds: CIFAR-10 rows read TFDS cifar10
RESULTS_FILE = "results.md"
RUN_RECORD = "reproduce.json"
# Fields that do not change what a run learns or measures; ignored when comparing configs.
IGNORED_FIELDS = ("train.plots", "train.keep_checkpoints", "train.checkpoint_every_epochs",
                  "train.eval_batch_size", "mfm.tsne_samples", "dataset.data_dir", "dataset.path")
PAPER_TAGS = {"mfm": "MFM", "jamal": "Jamal", "fsa": "FSA"}


class ReproduceError(ValueError):
  """A bad table, row selection or flag."""


# ------------------------------------------------------------------------------ row selection


def select_rows(table: tables.Table, spec: str = "") -> list[tables.Row]:
  """The rows to run, dependencies first, otherwise in table order.

  ``spec``: "" = the non-optional rows; "all" = every row; else comma-separated row names or
  fnmatch patterns (``ce-*``). Rows that a selected row needs are added.
  """
  by_name = {row.name: row for row in table.rows}
  if not spec:
    chosen = {row.name for row in table.rows if not row.optional}
  elif spec == "all":
    chosen = set(by_name)
  else:
    chosen = set()
    for pattern in filter(None, (p.strip() for p in spec.split(","))):
      matched = fnmatch.filter(by_name, pattern)
      if not matched:
        raise ReproduceError(f"table {table.name} has no row {pattern!r}; its rows: "
                             + ", ".join(by_name))
      chosen.update(matched)
  pending = list(chosen)
  while pending:
    for needed in by_name[pending.pop()].needs:
      if needed not in chosen:
        chosen.add(needed)
        pending.append(needed)
  ordered, placed = [], set()

  def place(name):
    if name in placed:
      return
    for needed in by_name[name].needs:
      place(needed)
    placed.add(name)
    ordered.append(by_name[name])

  for row in table.rows:
    if row.name in chosen:
      place(row.name)
  return ordered


# ------------------------------------------------------------------------- commands and configs


def workdir_of(root: str, table: str, row: str, seed: int) -> str:
  """``ROOT/TABLE/ROW/seed{k}``."""
  return os.path.join(root, table, row, f"seed{seed}")


def data_overrides(kind: str, cifar10_path: str, mit67_path: str = "",
                   vgg11_path: str = "") -> list[tuple[str, Any]]:
  """The dataset.* (and, for MIT-67, the pretrained weights') overrides for a row's data kind
  (full scale only); ReproduceError naming the flag when the data it needs is not given."""
  if kind == tables.MIT67:
    if not mit67_path or not vgg11_path:
      raise ReproduceError(
          f"MIT-67 rows need the user's MIT-67 and VGG-11 weights: --mit67=ROOT (ROOT/Images/"
          f"<class>/*.jpg; write its 60/40 split lists once with `python -m lt_jax.data.mit67 ROOT`;"
          f" or ${MIT67_ENV}) and --vgg11=WEIGHTS (`python -m lt_jax.models.convert_torchvision "
          f"vgg11.pth WEIGHTS --arch=vgg11_gap`; or ${VGG11_ENV})")
    return [("dataset.path", mit67_path), ("model.init_checkpoint", vgg11_path)]
  if kind != tables.CIFAR10 or cifar10_path == TFDS:
    return [("dataset.name", kind), ("dataset.source", "tfds")]
  if not cifar10_path:
    raise ReproduceError(f"CIFAR-10 rows need --cifar10=PATH (a folder or zip of "
                         f"split/class/*.jpg; or ${CIFAR10_ENV}=PATH) or --cifar10={TFDS}")
  return [("dataset.name", "cifar10"), ("dataset.source", "folder"), ("dataset.path", cifar10_path)]


def smoke_value(key: str, value: Any) -> Any:
  """Row overrides at smoke scale: imbalance factors capped at 10 (the digits have ~130 / class)."""
  if key == "dataset.imbalance":
    return min(float(value), 10.0)
  return value


@dataclasses.dataclass(frozen=True)
class Options:
  """What every row's command shares."""
  root: str
  table: str
  smoke: bool = False
  cifar10_path: str = ""  # see data_overrides
  mit67_path: str = ""  # MIT-67 rows: the user's MIT-67 root (data_overrides)
  vgg11_path: str = ""  # MIT-67 rows: converted VGG-11 weights
  extra: tuple[str, ...] = ()  # "key=value" config overrides for every row (--set)


def trainer_args(row: tables.Row, seed: int, opts: Options) -> list[str]:
  """The ``lt_jax.main`` arguments of one row-seed (not shell-quoted)."""
  overrides = [] if opts.smoke else data_overrides(row.data, opts.cifar10_path, opts.mit67_path,
                                                    opts.vgg11_path)
  ref = lambda name: workdir_of(opts.root, opts.table, name, seed)
  for key, value in row.overrides:
    value = tables.resolve_refs(value, ref)
    overrides.append((key, smoke_value(key, value) if opts.smoke else value))
  overrides.append(("seed", seed))
  config_arg = row.config + (":smoke" if opts.smoke else "")
  extra = []
  for item in opts.extra:
    key, eq, value = item.partition("=")
    if not eq or not key:
      raise ReproduceError(f"--set {item!r}: expected FIELD=VALUE, e.g. train.epochs=1")
    extra.append(f"--config.{key}={value}")
  return [f"--config={config_arg}", f"--workdir={ref(row.name)}",
          *commands.override_flags(dict(overrides)), *extra]


def config_missing(row: tables.Row) -> bool:
  return not (commands.REPO_ROOT / row.config).is_file()


def parse_config(args: Sequence[str]):
  """The config ``lt_jax.main`` would build from ``args`` (the config path made absolute)."""
  path, colon, rest = args[0].removeprefix("--config=").partition(":")
  return commands.parse_config_flags(f"{commands.REPO_ROOT / path}{colon}{rest}", args[1:])


# ------------------------------------------------------------------------------ run state


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, values JSON-normalised (tuples become lists)."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = json.loads(json.dumps(value))
  return flat


def config_differences(saved: dict, wanted: dict) -> list[str]:
  """Fields set in both configs with different values (IGNORED_FIELDS aside), as ``k: a != b``."""
  saved, wanted = flatten(saved), flatten(wanted)
  return [f"{k}: {saved[k]!r} != {wanted[k]!r}" for k in sorted(set(saved) & set(wanted))
          if k not in IGNORED_FIELDS and saved[k] != wanted[k]]


def read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_state(workdir: str, wanted_config: dict | None) -> tuple[str, str]:
  """(state, detail): complete | partial | empty | mismatch, from the files in ``workdir``.

  complete: ``summary.json`` exists (written once, at the end of a run); partial: started but no
  summary; mismatch: its ``config.json`` differs from ``wanted_config`` (never trained on).
  """
  saved = read_json(os.path.join(workdir, "config.json"))
  if saved is not None and wanted_config is not None:
    differences = config_differences(saved, wanted_config)
    if differences:
      return "mismatch", "; ".join(differences[:3]) + (" ..." if len(differences) > 3 else "")
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return "complete", ""
  if saved is not None or os.path.isdir(os.path.join(workdir, "checkpoints")):
    return "partial", ""
  return "empty", ""


# --------------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (ddof 1; None for a single value)."""
  if not values:
    raise ValueError("mean_std of no values")
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_mean_std(values: Sequence[float | None], decimals: int = 2) -> str:
  """``"24.31 +- 0.52"``; one value alone; ``"-"`` for none (None values are skipped)."""
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  mean, std = mean_std(values)
  return f"{mean:.{decimals}f}" + ("" if std is None else f" +- {std:.{decimals}f}")


# ----------------------------------------------------------------------------------- results


@dataclasses.dataclass
class RowResult:
  """What the workdirs of one row hold."""
  row: tables.Row
  summaries: list[dict]  # of the complete seeds, in seed order
  seeds_complete: list[int]
  status: str
  data: str  # the data a finished run read ("" when none)
  seconds: list[float]  # per complete seed: wall time of the run (reproduce.json), else the
  # sum of its epoch_seconds in metrics.jsonl (runs made by hand)
  devices: list[str]


def train_seconds(workdir: str) -> float | None:
  """Sum of the per-epoch training time recorded in ``metrics.jsonl`` (the last record per epoch)."""
  from lt_jax import metric_writer  # pylint: disable=g-import-not-at-top
  records = metric_writer.read_records(workdir, "train")
  return sum(r.get("epoch_seconds", 0.0) for r in records) if records else None


def describe_data(config: dict) -> str:
  """Short description of the data a run read (from its config.json)."""
  dataset = config.get("dataset", {})
  source, name = dataset.get("source"), dataset.get("name")
  if source == "folder":
    path = dataset.get("path", "")
    jpeg = " (JPEG copy)" if "cifar10-jpeg" in path else ""
    return f"folder {os.path.basename(path)}{jpeg}"
  if source == "digits":
    return "digits (smoke)"
  return f"{source} {name}"


def collect(row: tables.Row, seeds: int, opts: Options, wanted: dict | None = None,
            status: dict | None = None) -> RowResult:
  """Reads the summaries of a row's seeds (each replica of a ``replicas = R`` run is one sample).

  ``wanted`` maps seed -> the config dict the row should have (seeds left out are not checked);
  ``status`` maps seed -> a failure to report.
  """
  status, wanted = status or {}, wanted or {}
  summaries, complete, data, seconds, devices, notes = [], [], set(), [], set(), []
  for seed in range(seeds):
    workdir = workdir_of(opts.root, opts.table, row.name, seed)
    state, detail = run_state(workdir, wanted.get(seed))
    if state == "complete":
      summary = read_json(os.path.join(workdir, "summary.json"))
      summaries.extend(summary.get("replicas") or [summary])  # a replicas run: each model counts
      complete.append(seed)
      config = read_json(os.path.join(workdir, "config.json")) or {}
      data.add(describe_data(config))
      record = read_json(os.path.join(workdir, RUN_RECORD)) or {}
      spent = record.get("wall_seconds", train_seconds(workdir))
      if spent is not None:
        seconds.append(spent)
      if record.get("device"):
        devices.add(record["device"])
    elif state == "mismatch":
      notes.append(f"seed{seed}: workdir holds another config ({detail})")
    if seed in status:
      notes.append(f"seed{seed}: {status[seed]}")
  if config_missing(row):
    text = f"config missing ({row.config})"
  elif not complete:
    text = "not run"
  elif len(complete) < seeds:
    text = f"{len(complete)}/{seeds} seeds"
  else:
    text = "complete"
  text = "; ".join([text, *notes])
  return RowResult(row, summaries, complete, text, ", ".join(sorted(data)), seconds, sorted(devices))


def paper_text(row: tables.Row, values: dict[str, paper_results.PaperValue]) -> str:
  """The row's published numbers as written (``-`` where the paper gives none)."""
  parts = []
  for key in row.paper:
    value = values.get(key)
    text = value.display() if value else "-"
    parts.append(text + (f" [{PAPER_TAGS[key.split('/')[0]]}]" if len(row.paper) > 1 else ""))
  return "; ".join(parts) or "-"


def _shots(summaries: list[dict]) -> str:
  groups = []
  for group in ("many", "medium", "few"):
    values = [s.get(f"final_{group}_accuracy") for s in summaries]
    groups.append(format_mean_std([v for v in values if v is not None], 1).split(" +- ")[0])
  return " / ".join(groups) if summaries else "-"


def results_markdown(table: tables.Table, results: Sequence[RowResult],
                     values: dict[str, paper_results.PaperValue], *, seeds: int, smoke: bool,
                     cifar10_path: str, command_line: str,
                     plots: Sequence[str] = (), results_dir: str = ".") -> str:
  """The ``results.md`` of a table."""
  paper_header = "paper (NOT comparable: smoke)" if smoke else "paper"
  lines = [f"# {table.title}", ""]
  if smoke:
    lines += ["**SMOKE SCALE.** Every row ran its config's `:smoke` variant (scikit-learn digits, a "
              "tiny ResNet/LeNet, a few epochs, imbalance capped at 10). These numbers test the "
              "tooling only; the paper column is shown for orientation and is **not comparable**.",
              ""]
  lines += [
      f"- Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by `{command_line}`.",
      f"- Paper numbers: {table.source}, as transcribed in `experiments/paper_numbers/` (`-` = "
      "none given).",
      f"- Ours: top-1 error (%) on the test set, mean +- sample std over the complete seeds "
      f"(asked for {seeds}: `--config.seed=0..{seeds - 1}`, `dataset.seed` fixed, so every seed "
      "trains on the same long-tailed subset); final = last epoch, best = best epoch (selected on "
      "the test set, as the papers do). Two-phase rows (FSA, cRT, ...) count phase-II evaluation "
      "rounds as epochs. s / seed: wall time of the run when this tool ran it (`reproduce.json`), "
      "else the sum of its epoch times.",
  ]
  if smoke:
    lines.append("- Data: scikit-learn digits (smoke; MIT-67 rows: a generated miniature in "
                 "MIT-67's format), not the paper's dataset.")
  else:
    cifar10 = "CIFAR-10 rows read TFDS `cifar10`"
    if cifar10_path not in ("", TFDS):
      cifar10 = f"CIFAR-10 rows read `dataset.source=folder dataset.path={cifar10_path}`"
      if "cifar10-jpeg" in cifar10_path:
        cifar10 += (", a JPEG (quality 75) copy of CIFAR-10 whose errors run a few points above "
                    "the original files'")
    lines.append(f"- Data: {cifar10}; CIFAR-100 and Fashion-MNIST rows read TFDS; MIT-67 rows "
                 "read the user's folder (`--mit67`). The `data` column says what each finished "
                 "run read.")
  devices = sorted({d for r in results for d in r.devices})
  if devices:
    lines.append(f"- Devices of runs made by this tool: {', '.join(devices)}.")
  lines += [f"- {note}" for note in table.notes]
  setting = "setting (full scale; smoke: digits, IF <= 10)" if smoke else "setting"
  lines += ["", f"| row | method | {setting} | {paper_header} | ours final | ours best | "
            "many / medium / few acc. (final) | seeds (last epoch) | s / seed | data | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for result in results:
    row, summaries = result.row, result.summaries
    final = format_mean_std([s["final_top1_error"] for s in summaries])
    best = format_mean_std([s["best_top1_error"] for s in summaries])
    epochs = sorted({s.get("final_epoch") for s in summaries})
    seconds = format_mean_std(result.seconds, 0).split(" +- ")[0]
    cells = [f"`{row.name}`", row.method, row.setting, paper_text(row, values),
             final, best, _shots(summaries),
             f"{len(summaries)}" + (f" ({epochs[0]})" if len(epochs) == 1 else ""),
             seconds, result.data or "-", result.status + (f"; {row.note}" if row.note else "")]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  if plots:
    lines += ["", "## Per-class recall and confusion matrices (seed 0, final epoch)", ""]
    lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, results_dir)})" for p in plots]
  lines += ["", "Row commands: `python -m experiments.reproduce "
            f"{table.name} --dry_run{' --smoke' if smoke else ''}` prints them.", ""]
  return "\n".join(lines)


def write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


# --------------------------------------------------------------------------------------- runs


def device_description() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  kind = getattr(device, "device_kind", device.platform)
  cores = f" ({os.cpu_count()} CPU cores)" if device.platform == "cpu" else ""
  return f"{jax.device_count()}x {kind}{cores}"


def train_one(args: Sequence[str], config, workdir: str) -> dict:
  """Trains in-process as ``lt_jax.main`` does (``run.run``); writes ``reproduce.json`` (command,
  device, wall time, date).
  """
  from lt_jax import run  # pylint: disable=g-import-not-at-top
  started = time.time()
  summary = run.run(config, workdir)
  record = {"command": shlex.join(commands.trainer_command(args)), "device": device_description(),
            "wall_seconds": round(time.time() - started, 1),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  write_text(os.path.join(workdir, RUN_RECORD), json.dumps(record, indent=1) + "\n")
  return summary


def reproduce(table_name: str, opts: Options, *, rows: str = "", seeds: int = 3, dry_run: bool = False,
              report_only: bool = False, command_line: str = "", out=None) -> int:
  """Runs (or prints) the table's rows and writes results.md; the exit status (1 if a run failed).

  Every row-seed's command and config are built first, so a bad flag fails before any training.
  """
  out = out or sys.stdout
  if seeds < 1:
    raise ReproduceError(f"--seeds={seeds} must be >= 1")
  table = tables.get_table(table_name)
  selected = select_rows(table, rows)
  failures = 0
  status: dict[str, dict[int, str]] = {row.name: {} for row in table.rows}
  wanted: dict[str, dict[int, dict]] = {row.name: {} for row in table.rows}
  runs = []
  for row in selected:
    if config_missing(row):
      print(f"# {row.name}: config missing ({row.config}); skipped", file=out)
      continue
    for seed in range(seeds):
      args = trainer_args(row, seed, opts)
      config = parse_config(args)
      wanted[row.name][seed] = config.to_dict()
      runs.append((row, seed, args, config))
  for row, seed, args, config in runs:
    workdir = workdir_of(opts.root, opts.table, row.name, seed)
    state, detail = run_state(workdir, wanted[row.name][seed])
    line = shlex.join(commands.trainer_command(args))
    if dry_run:
      print(("# complete: " if state == "complete" else "") + line, file=out, flush=True)
      continue
    if report_only or state == "complete":
      continue
    if state == "mismatch":
      status[row.name][seed] = "not run: workdir holds another config"
      print(f"[reproduce] {row.name} seed{seed}: {workdir} holds another config ({detail}); "
            "not touched", file=out, flush=True)
      continue
    waiting = [n for n in row.needs
               if run_state(workdir_of(opts.root, opts.table, n, seed), None)[0] != "complete"]
    if waiting:
      status[row.name][seed] = f"not run: needs {', '.join(waiting)} seed{seed}"
      continue
    print(f"[reproduce] {row.name} seed{seed}: {line}", file=out, flush=True)
    try:
      train_one(args, config, workdir)
    except Exception as e:  # pylint: disable=broad-except  (one failed row must not stop the table)
      failures += 1
      first_line = str(e).splitlines()[0][:200] if str(e) else ""
      status[row.name][seed] = f"failed: {type(e).__name__}: {first_line}"
      print(f"[reproduce] {row.name} seed{seed} FAILED: {e!r}", file=out, flush=True)
  if dry_run:
    return 0
  values = paper_results.load()
  results = [collect(row, seeds, opts, wanted[row.name], status[row.name]) for row in selected]
  plots = []
  if table.compare:
    done = {r.row.method: workdir_of(opts.root, opts.table, r.row.name, r.seeds_complete[0])
            for r in results if r.seeds_complete}
    if done:
      from experiments import compare  # pylint: disable=g-import-not-at-top
      plots = compare.compare_plots(done, os.path.join(opts.root, opts.table, "compare"))
  command_line = command_line or f"python -m experiments.reproduce {table_name}"
  text = results_markdown(table, results, values, seeds=seeds, smoke=opts.smoke,
                          cifar10_path=opts.cifar10_path, command_line=command_line,
                          plots=plots, results_dir=os.path.join(opts.root, opts.table))
  path = os.path.join(opts.root, opts.table, RESULTS_FILE)
  write_text(path, text)
  print(f"[reproduce] wrote {path}", file=out, flush=True)
  return 1 if failures else 0


def list_tables(out=None) -> None:
  """Every table's rows with config and overrides (``--list``)."""
  out = out or sys.stdout
  for name in tables.TABLES:
    table = tables.get_table(name)
    print(f"{name}: {table.title}", file=out)
    for row in table.rows:
      flags_text = " ".join(f"{k}={v}" for k, v in row.overrides)
      extra = " [optional]" if row.optional else ""
      missing = " [config missing]" if config_missing(row) else ""
      print(f"  {row.name}: {row.config} {flags_text}{extra}{missing}", file=out)


# ---------------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
  """The command line (argparse: launch.sweep owns the absl flags of the same names)."""
  p = argparse.ArgumentParser(prog="python -m experiments.reproduce",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("table", nargs="?", help="one of: " + ", ".join(tables.TABLES))
  p.add_argument("--workdir", default="runs/reproduce",
                 help="root: row-seeds run in ROOT/TABLE/ROW/seed{k} (default %(default)s)")
  p.add_argument("--rows", default="", help="comma-separated row names or patterns (ce-*); 'all' "
                 "adds the optional rows; default: the non-optional rows")
  p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (--config.seed=k), one workdir "
                 "each (default %(default)s)")
  p.add_argument("--smoke", action="store_true", help="run every config's :smoke variant (digits, "
                 "tiny model, few epochs: tests the tooling on a CPU)")
  p.add_argument("--dry_run", action="store_true", help="print the lt_jax.main commands; run nothing")
  p.add_argument("--report_only", action="store_true", help="run nothing; rewrite results.md from "
                 "the workdirs (e.g. after running the --dry_run commands elsewhere)")
  p.add_argument("--cifar10", default=os.environ.get(CIFAR10_ENV, ""), help="folder or zip of "
                 f"CIFAR-10 (split/class/*.jpg), or '{TFDS}' for TFDS cifar10; needed by CIFAR-10 "
                 f"rows (not with --smoke); default ${CIFAR10_ENV}")
  p.add_argument("--mit67", default=os.environ.get(MIT67_ENV, ""), help="MIT-67 root "
                 "(Images/<class>/*.jpg and the lists of `python -m lt_jax.data.mit67 ROOT`); needed "
                 f"by MIT-67 rows (not with --smoke); default ${MIT67_ENV}")
  p.add_argument("--vgg11", default=os.environ.get(VGG11_ENV, ""), help="ImageNet VGG-11 weights "
                 "converted by `lt_jax.models.convert_torchvision --arch=vgg11_gap`; needed by MIT-67 "
                 f"rows (not with --smoke); default ${VGG11_ENV}")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="config override for every row, e.g. --set=train.epochs=1 (repeatable)")
  p.add_argument("--list", action="store_true", help="list the tables and their rows, then exit")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = parser().parse_args(argv)
  flags.FLAGS.mark_as_parsed()  # absl logging in the trainer; no absl flags are read here
  if args.list:
    list_tables()
    return 0
  if not args.table:
    parser().error("give a TABLE; known: " + ", ".join(tables.TABLES))
  opts = Options(args.workdir, args.table, args.smoke, args.cifar10, args.mit67, args.vgg11,
                 tuple(args.set))
  command_line = shlex.join(["python", "-m", "experiments.reproduce",
                             *(sys.argv[1:] if argv is None else argv)])
  try:
    return reproduce(args.table, opts, rows=args.rows, seeds=args.seeds, dry_run=args.dry_run,
                     report_only=args.report_only, command_line=command_line)
  except ValueError as e:  # ReproduceError, commands.CommandError, a bad table
    print(f"reproduce: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
