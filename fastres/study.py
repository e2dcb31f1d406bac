"""Studies: what affects the training of residual networks, every row over several seeds.

    python -m fastres study --list
    python -m fastres study backbone --runs 5                  # Myrtle.ai's ladder, CIFAR-10
    python -m fastres study fashion-hparams --quick --runs 2   # CPU, a few minutes
    python -m fastres study tricks --output results/           # leave-one-out over cifar10's recipe
    python -m fastres study widths --file my_study.py          # a study of your own
    torchrun --nproc_per_node=8 -m fastres study backbone --runs 8   # seeds spread over the GPUs

A study is plain data (the built-in ones are in studies.py): a base Config, and rows that are
config deltas from it (row 0, or the named `baseline`, is what the others are compared with). Each row is trained for seeds
seed..seed+runs-1 by one runner.run_many call (one warm-up and compile per row), and the study
writes into --output (default study-results/):

    study-NAME.jsonl  one record per finished run, written as soon as it finishes (keyed by study,
                      row, seed and a hash of the row's config): a rerun, also after an interrupt,
                      trains only the seeds not there; a changed row trains again. A run whose
                      loss became NaN or inf is recorded as diverged: the table says so, the study
                      goes on with the next row and does not train that row again
    study-NAME.md     | row | changes | runs | accuracy mean +- std | time | delta vs baseline
                      with a 95% Welch t-interval (n/a below 2 runs per side) | published |
    study-NAME.png    accuracy against time per row, with std error bars

(`-quick` is appended to NAME in the file names under --quick.) Your own study, in a .py file
given to --file (or a JSON file with the same fields: name, description, base or recipe, rows
of {name, changes, published}, baseline):

    from fastres.config import Config
    from fastres.study import Row, Study, register_study

    register_study(Study(
        "widths", "ResNet-9 width on Fashion-MNIST",
        base=Config(dataset="fashion-mnist", arch="resnet9", act="relu", epochs=4, lr=0.2),
        rows=[Row("w1", {}), Row("w0.5", {"width": 0.5}), Row("w0.25", {"width": 0.25})]))

--quick (tests and CPU smoke runs; the numbers are NOT comparable with full runs or with the
published figures) changes every row's config after its deltas, exactly as QUICK says:
first 10000 training and 2000 test images, epochs x0.25 (fractional epochs are fine), batch size
x0.25 (at least 16), width x0.25, no compile, no per-epoch diagnostic evaluation. Values given
explicitly win over the last four: by --set, in a row's changes or in a JSON file's base (a .py
study names such base fields in Study(explicit=...)); the multipliers scale every row's values.
The report and its changes column give the values used. Each row keeps
its own LR (train.py's LR is for a batch-mean loss; we do not rescale it for the smaller batch).
On one CPU thread `fashion-hparams --quick --runs 3` takes about a minute; the CIFAR-10 ladders
are slower (a quick ResNet-9 run at width 0.25 is ~75 s, so `backbone --quick` ~5 min per seed).

--set FIELD=VALUE changes the base config of every row before the rows' deltas (--device,
--dataset, --data-dir are shortcuts), e.g. `--dataset my.npz` runs a ladder on your own images.
Under torchrun, each row's seeds are spread over the ranks (run_many with --parallel runs) and
rank 0 writes the files; every rank reads the JSONL to decide what is left, so a multi-node
study needs --output on a shared filesystem.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import runpy
import typing
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .cli import subcommand
from .config import Config, get_recipe
from .errors import FastresError
from .report import JsonlLog, atomic_write, mean_std, prepare_output, welch_interval


# Set by the study itself, so a value given in a study file or by --set would be ignored.
STUDY_SETS = ("seed", "runs", "output", "plot", "save")
NOT_SETTABLE = ("cannot be set in a study: its seeds come from --seed and --runs, its files go to --output, "
                "and it writes no per-run plots or weights")


@dataclass(frozen=True)
class Row:
    name: str                                      # short slug, unique within the study
    changes: dict = field(default_factory=dict)    # Config field -> value, applied to the base
    published: float | None = None                 # published test accuracy in % (91.0, not 0.91)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: Config
    rows: tuple
    baseline: str = ""          # the row the others are compared with ("" = the first row)
    source: str = ""            # where the published figures come from
    explicit: tuple = ()        # base fields the author set on purpose: --quick keeps their values

    def __post_init__(self):
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "explicit", tuple(self.explicit))
        texts = (self.name, self.description, self.baseline, self.source)
        if not all(isinstance(t, str) for t in texts) or not isinstance(self.base, Config):
            raise FastresError(f"study {self.name!r}: name, description, baseline and source must be text "
                               f"and base a Config")
        if not re.fullmatch(r"\w[\w.-]*", self.name):       # it names files in --output
            raise FastresError(f"study {self.name!r}: a study name is letters, digits, '_', '-' and '.', "
                               f"starting with a letter or digit (no '/' or '..')")
        for row in self.rows:
            if not (isinstance(row, Row) and isinstance(row.name, str) and isinstance(row.changes, dict)
                    and (row.published is None or type(row.published) in (int, float))):
                raise FastresError(f"study {self.name!r}: each row needs a text name, a dict of changes and "
                                   f"a published accuracy that is a number or absent, got {row!r}")
            if row.published is not None and not 1 < row.published <= 100:
                raise FastresError(f"study {self.name!r}, row {row.name!r}: published {row.published} is not an "
                                   f"accuracy in % (write 91% as 91.0, not 0.91)")
        names = [r.name for r in self.rows]
        known = {f.name for f in fields(Config)}
        if unknown := sorted(set(self.explicit) - known):
            raise FastresError(f"study {self.name!r}: explicit names unknown config fields {unknown}")
        for where, keys in [("base", self.explicit), *((f"row {r.name!r}", r.changes) for r in self.rows)]:
            if fixed := [k for k in keys if k in STUDY_SETS]:
                raise FastresError(f"study {self.name!r}, {where}: {', '.join(fixed)} {NOT_SETTABLE}")
        if not names or len(set(names)) != len(names):
            raise FastresError(f"study {self.name!r}: rows need unique names, got {names}")
        for row in self.rows:
            if unknown := sorted(set(row.changes) - known):
                raise FastresError(f"study {self.name!r}, row {row.name!r}: unknown config fields {unknown}")
            try:                    # every row's values, checked before any row trains
                self.base.replace(**row.changes).replace(plot=False, save=False).validate()
            except FastresError as e:
                raise FastresError(f"study {self.name!r}, row {row.name!r}: {e}") from None
        if self.baseline and self.baseline not in names:
            raise FastresError(f"study {self.name!r}: baseline {self.baseline!r} is not one of its rows")
        if not self.baseline:
            object.__setattr__(self, "baseline", names[0])


STUDIES: dict[str, Callable[[], Study]] = {}    # name -> builder (built when run: recipes may change)


def register_study(study: Study | Callable[[], Study], name: str | None = None):
    STUDIES[name or study.name] = study if callable(study) else (lambda: study)
    return study


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise FastresError(f"unknown study {name!r}; known studies: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]()


def cumulative(steps: list[tuple], start: dict | None = None) -> list[Row]:
    """Rows for a ladder where each step keeps the previous ones: (name, changes[, published])."""
    rows, acc = [], dict(start or {})
    for name, changes, *published in steps:
        acc = {**acc, **changes}
        rows.append(Row(name, dict(acc), published[0] if published else None))
    return rows


# ---------------------------------------------------------------- quick mode, keys, statistics

QUICK = {"train_subset": 10000, "test_subset": 2000, "epochs": 0.25, "batch_size": 0.25, "width": 0.25,
         "compile": False, "eval_every": 0}
SCALED = ("epochs", "batch_size", "width")      # multipliers of the row's value; the others are values


def quick(cfg: Config, keep=()) -> Config:
    """The --quick version of a row's config (see the module docstring); the fields in keep were
    given explicitly and keep their values (the multipliers apply to every row)."""
    values = {k: v for k, v in QUICK.items() if k not in SCALED and k not in keep}
    return cfg.replace(epochs=cfg.epochs * QUICK["epochs"], width=cfg.width * QUICK["width"],
                       batch_size=max(16, round(cfg.batch_size * QUICK["batch_size"])), **values)


def quick_text(cfgs: list[Config]) -> str:
    """What --quick did, with the values the rows actually used."""
    return ", ".join(f"{k} x{v}" if k in SCALED else f"{k} {'/'.join(sorted({str(getattr(c, k)) for c in cfgs}))}"
                     for k, v in QUICK.items())


# Fields that change neither what is trained nor the numbers it gives.
UNKEYED = {"seed", "runs", "output", "plot", "save", "data_dir", "download", "threads", "eval_every",
           "device", "parallel", "dist_backend"}


def config_hash(cfg: Config, device_type: str) -> str:
    """12 hex digits identifying a row's training; the device class is part of it, and on a CPU
    the thread count (cfg.threads, 0 resolved by the caller to the count in use): CPU and GPU
    times, or times at 1 and 2 threads, must not be averaged together."""
    keyed = {k: v for k, v in asdict(cfg).items() if k not in UNKEYED}
    key = {"config": keyed, "device": device_type}
    if device_type == "cpu":
        key["threads"] = cfg.threads
    text = json.dumps(key, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def format_changes(changes: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items()) or "—"


def seconds(t: float) -> str:
    return f"{t:.2f}" if t < 10 else f"{t:.1f}"


def markdown_table(study: Study, runs: dict[str, list[dict]], changes: dict[str, dict] | None = None) -> str:
    """runs: row name -> its run records (accuracy as a fraction, time_s; or diverged). Accuracies
    and differences are shown in %, differences in percentage points with their 95% CI. changes:
    row name -> the changed fields' values as trained (default: the rows' own changes)."""
    changes = changes or {row.name: row.changes for row in study.rows}
    base = [r.get("accuracy") for r in runs.get(study.baseline, [])]
    base = [] if None in base else base     # a diverged baseline: no differences
    lines = ["| row | changes | runs | accuracy % (mean ± std) | time s (mean ± std) "
             f"| Δ vs {study.baseline}, pp (95% CI) | published % |", "|---|---|---:|---:|---:|---|---:|"]
    for row in study.rows:
        records = runs.get(row.name, [])
        published = "" if row.published is None else f"{row.published:.1f}"
        if not records:
            lines.append(f"| {row.name} | {format_changes(changes[row.name])} | 0 | | | | {published} |")
            continue
        if diverged := [r for r in records if r.get("diverged")]:
            lines.append(f"| {row.name} | {format_changes(changes[row.name])} | {len(records)} | "
                         f"diverged (seed {diverged[0]['seed']}) | | | {published} |")
            continue
        acc = [100 * r["accuracy"] for r in records]
        (am, asd), (tm, tsd) = mean_std(acc), mean_std([r["time_s"] for r in records])
        acc_cell, time_cell = (f"{am:.2f} ± {asd:.2f}", f"{seconds(tm)} ± {seconds(tsd)}") if len(records) > 1 \
            else (f"{am:.2f}", seconds(tm))         # no std from one run
        if row.name == study.baseline:
            delta = "(baseline)"
        else:
            ci = welch_interval(acc, [100 * a for a in base])
            delta = "n/a" if ci is None else f"{ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}]"
        lines.append(f"| {row.name} | {format_changes(changes[row.name])} | {len(records)} | {acc_cell} "
                     f"| {time_cell} | {delta} | {published} |")
    return "\n".join(lines)


def can_plot() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_study(study: Study, runs: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Accuracy (%) against time (s) per row: mean with std error bars, labelled by row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in study.rows:
        records = runs.get(row.name)
        if not records or any(r.get("diverged") for r in records):
            continue
        (am, asd), (tm, tsd) = (mean_std([100 * r["accuracy"] for r in records]),
                                mean_std([r["time_s"] for r in records]))
        ax.errorbar(tm, am, xerr=tsd, yerr=asd, fmt="s" if row.name == study.baseline else "o", capsize=3)
        ax.annotate(row.name, (tm, am), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("time inside the timer (s), mean ± std")
    ax.set_ylabel("test accuracy (%), mean ± std")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


RUN_KEYS = {"study": str, "row": str, "seed": int, "config_hash": str}
DIVERGED = "loss became"    # how train.check_finite's error starts (a NaN or inf loss)


def read_runs(path: Path) -> tuple[dict[tuple, dict], int]:
    """(study, row, seed, config_hash) -> the latest run record in a study JSONL; and the number
    of lines skipped: cut short by a kill, not UTF-8, edited or damaged (those runs re-run)."""
    done, skipped = {}, 0
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):      # UnicodeDecodeError and JSONDecodeError are ValueErrors
            rec = None
        if is_run(rec):
            done[tuple(rec[k] for k in RUN_KEYS)] = rec
        elif line.strip():
            skipped += 1
    return done, skipped


def is_run(rec) -> bool:
    """Whether a JSONL record is a whole run: typed keys, and an accuracy and time or diverged."""
    return (isinstance(rec, dict) and rec.get("type") == "run"
            and all(type(rec.get(k)) is kind for k, kind in RUN_KEYS.items())
            and (all(type(rec.get(k)) in (int, float) for k in ("accuracy", "time_s"))
                 or isinstance(rec.get("diverged"), str))
            and isinstance(rec.get("env", {}), dict))


# ---------------------------------------------------------------- running a study

def row_configs(study: Study, is_quick: bool, overrides: dict, cpu: bool = False) -> list[tuple[Row, Config]]:
    """Each row's config (base + overrides + row deltas [+ quick, which keeps the values set
    explicitly: by overrides, the row or the study's explicit fields]), validated before any training.
    On a CPU, as in `train`, compile is off unless set explicitly (GPU recipes compile on GPUs only)."""
    if fixed := [k for k in overrides if k in STUDY_SETS]:
        raise FastresError(f"--set {', '.join(fixed)}: {NOT_SETTABLE}")
    base, out = study.base.replace(**overrides), []
    for row in study.rows:
        cfg = base.replace(**row.changes)
        explicit = {*overrides, *row.changes, *study.explicit}
        cfg = (quick(cfg, explicit) if is_quick else cfg).replace(output="", plot=False, save=False,
                                                        parallel="runs" if cfg.parallel == "auto" else cfg.parallel)
        if cpu and "compile" not in explicit:
            cfg = cfg.replace(compile=False)
        try:
            cfg.validate()
        except FastresError as e:
            raise FastresError(f"study {study.name!r}, row {row.name!r}: {e}") from None
        out.append((row, cfg))
    return out


def run_study(study: Study, runs: int = 5, seed: int = 0, is_quick: bool = False, output: str = "study-results",
              overrides: dict | None = None, printer=print, command: str = "") -> dict:
    """Train every missing (row, seed), then write the table, JSONL and plot. Returns paths and table."""
    import torch
    from . import distributed, runner      # torch-heavy: imported when a study runs
    overrides = overrides or {}
    device_type = runner.resolve_device(study.base.replace(**overrides).device).type
    configs = row_configs(study, is_quick, overrides, cpu=device_type == "cpu")
    if device_type == "cpu":                # threads 0 (torch's default): the count it gives here
        configs = [(row, cfg.replace(threads=cfg.threads or torch.get_num_threads())) for row, cfg in configs]
    main = distributed.is_main_process(configs[0][1])
    say = printer if main else (lambda *a, **k: None)
    stem = f"study-{study.name}{'-quick' if is_quick else ''}"
    out = Path(output)
    jsonl = out / f"{stem}.jsonl"
    if main:
        prepare_output(out, [f"{stem}.jsonl", f"{stem}.md", f"{stem}.png"])
    log = JsonlLog(jsonl if main else None)
    plot = main and can_plot()
    if main and not plot:                   # said now, not found after hours of training
        say("note: matplotlib is not installed, so no PNG is drawn (pip install 'fastres[plot]')")
    say(f"study {study.name}: {study.description}; {len(configs)} rows x {runs} seeds on {device_type}")
    quick_note = quick_text([cfg for _, cfg in configs]) if is_quick else ""
    if is_quick:
        say(f"QUICK MODE ({quick_note}): the numbers are NOT comparable with full runs or with the "
            f"published figures")
    done, skipped = read_runs(jsonl)
    if skipped:
        say(f"{jsonl}: {skipped} line(s) skipped (cut short, damaged or edited): those runs train again")
    if main and jsonl.exists() and not jsonl.read_bytes().endswith(b"\n"):
        with open(jsonl, "a", encoding="utf-8") as f:     # end a line cut short, so appends stay whole
            f.write("\n")
    seeds = list(range(seed, seed + runs))
    env, keys = None, {row.name: config_hash(cfg, device_type) for row, cfg in configs}
    shown = {row.name: {k: getattr(cfg, k) for k in row.changes} for row, cfg in configs}   # as trained
    for i, (row, cfg) in enumerate(configs, 1):
        key = keys[row.name]
        missing = [s for s in seeds if (study.name, row.name, s, key) not in done]
        if diverged := [r for r in records_of(done, study.name, row.name, key) if r.get("diverged")]:
            say(f"[{i}/{len(configs)}] {row.name}: diverged at seed {diverged[0]['seed']} before, skipped")
            continue
        if not missing:
            say(f"[{i}/{len(configs)}] {row.name}: all {runs} seeds already in {jsonl}, skipped")
            continue
        say(f"[{i}/{len(configs)}] {row.name} ({format_changes(shown[row.name])}): seeds {missing}")
        finished = []

        def record(result: dict, row=row, key=key, cfg=cfg):
            """One run's record, written as soon as run_many has it (under torchrun --parallel runs:
            once its round of runs is gathered), so an interrupted study keeps every finished run."""
            nonlocal env
            if env is None:
                from .report import environment
                env = environment(runner.resolve_device(cfg.device))
            date = datetime.now(timezone.utc).isoformat(timespec="seconds")
            rec = {"type": "run", "study": study.name, "row": row.name, "seed": result["seed"], "config_hash": key,
                   "quick": is_quick, "date": date, **result, "config": asdict(cfg), "env": env}
            log.write(rec)
            done[(study.name, row.name, result["seed"], key)] = json.loads(json.dumps(rec, default=str))
            finished.append(result["seed"])
        try:
            runner.run_many(cfg, say, seeds=missing, on_run=lambda r: record(asdict(r)))
        except FastresError as e:      # a NaN loss: record the row as diverged, go on with the next
            if not str(e).startswith(DIVERGED):
                raise
            seed_at = next(s for s in missing if s not in finished)
            say(f"[{i}/{len(configs)}] {row.name}: diverged at seed {seed_at} ({e}); the row is recorded "
                f"as diverged and not trained again")
            record({"seed": seed_at, "diverged": str(e)})
    by_row = {row.name: [r for r in records_of(done, study.name, row.name, keys[row.name])
                         if r["seed"] in seeds or r.get("diverged")] for row in study.rows}
    table = markdown_table(study, by_row, shown)
    say("\n" + table)
    if not main:
        return {"table": table}
    md = out / f"{stem}.md"
    atomic_write(md, lambda tmp: tmp.write_text(report_text(study, table, by_row, quick_note, runs, command)))
    png = plot_study(study, by_row, out / f"{stem}.png", f"study {study.name}{' (quick)' if is_quick else ''}") \
        if plot else None
    say(f"wrote {md}, {jsonl}{f', {png}' if png else ''}")
    return {"table": table, "markdown": md, "jsonl": jsonl, "png": png}


def records_of(done: dict, study: str, row: str, key: str) -> list[dict]:
    """A row's run records (of its current config)."""
    return [r for k, r in done.items() if k[:2] == (study, row) and k[3] == key]


def report_text(study: Study, table: str, by_row: dict, quick_note: str, runs: int, command: str) -> str:
    records = [r for rs in by_row.values() for r in rs]
    devices = sorted({r["env"].get("gpu") or r["env"]["device"] for r in records if r.get("env")})
    commits = sorted({(r["env"].get("commit") or "?")[:10] for r in records if r.get("env")})
    dates = sorted(r["date"] for r in records if r.get("date"))
    lines = [f"# Study `{study.name}`", "\n" + study.description + ".\n",
             f"- command: `{command}`" if command else "",
             f"- runs: {dates[0] if dates else '?'} to {dates[-1] if dates else '?'} (UTC); commit(s) "
             f"{', '.join(commits) or '?'}; device(s) {', '.join(devices) or '?'}",
             f"- {runs} seed(s) per row; Δ: difference of mean accuracy to row `{study.baseline}` in "
             "percentage points with a 95% Welch t-interval (n/a with fewer than 2 runs per side)",
             f"- published: {study.source}" if study.source else ""]
    if quick_note:
        lines.append(f"- **QUICK MODE**: {quick_note} (the values used; batch size at least 16). These numbers "
                     "are NOT comparable with full runs or with the published figures.")
    return "\n".join(line for line in lines if line != "") + "\n\n" + table + "\n"


# ---------------------------------------------------------------- user studies and the CLI

STUDY_KEYS = ("name", "description", "recipe", "base", "rows", "baseline", "source")
ROW_KEYS = ("name", "changes", "published")


def load_study_file(path: str) -> list[str]:
    """Register the studies in a .py file (which calls register_study) or a .json file (one
    study object or a list of them); returns the names registered."""
    p = Path(path)
    if not p.exists():
        raise FastresError(f"--file {path}: no such file")
    before = set(STUDIES)
    if p.suffix == ".py":
        try:
            runpy.run_path(str(p))
        except FastresError:
            raise
        except Exception as e:          # the user's Python: its error, in one line
            raise FastresError(f"--file {path}: {type(e).__name__}: {e}") from e
        return sorted(set(STUDIES) - before)
    try:
        specs = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FastresError(f"--file {path}: not valid JSON ({e})") from None
    names = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if not isinstance(spec, dict) or not isinstance(spec.get("rows", []), list) or not all(
                isinstance(r, dict) for r in spec.get("rows", [])):
            raise FastresError(f"--file {path}: a study is an object with a name and a list of row objects")
        for what, keys, allowed in [("study", spec, STUDY_KEYS), *(("row", r, ROW_KEYS) for r in spec.get("rows", []))]:
            if unknown := [k for k in keys if k not in allowed]:     # a misspelt key would be ignored
                raise FastresError(f"--file {path}: unknown {what} keys: {', '.join(unknown)} "
                                   f"(allowed: {', '.join(allowed)})")
        try:
            base = get_recipe(spec["recipe"]).config if "recipe" in spec else Config()
            base = base.replace(**coerce(spec.get("base", {})))
            rows = [Row(r["name"], coerce(r.get("changes", {})), r.get("published")) for r in spec["rows"]]
            study = Study(spec["name"], spec.get("description", ""), base, rows, spec.get("baseline", ""),
                          spec.get("source", ""), explicit=tuple(spec.get("base", {})))
        except (KeyError, TypeError, AttributeError) as e:
            raise FastresError(f"--file {path}: a study needs name and rows (each with a name): {e}") from None
        register_study(study)
        names.append(study.name)
    return names


def coerce(values: dict) -> dict:
    """JSON lists -> tuples for the tuple-typed Config fields; unknown fields are an error."""
    hints = typing.get_type_hints(Config)
    if unknown := sorted(set(values) - set(hints)):
        raise FastresError(f"unknown config fields {unknown}")
    return {k: tuple(v) if hints[k] is tuple else v for k, v in values.items()}


def parse_set(items: list[str]) -> dict:
    """--set KEY=VALUE pairs typed by the Config field (bools: true/false; tuples: a,b)."""
    hints, out = typing.get_type_hints(Config), {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in hints:
            raise FastresError(f"--set {item!r}: expected FIELD=VALUE with a Config field (see `python -m fastres train --help`)")
        kind = hints[key]
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                out[key] = text.lower() in ("true", "1")
            elif kind is tuple:
                out[key] = tuple(float(v) for v in text.split(","))
            else:
                out[key] = kind(text)
        except ValueError:
            raise FastresError(f"--set {item!r}: {text!r} is not a valid {kind.__name__}") from None
    return out


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("name", nargs="?", help="the study to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the studies and their rows, then exit")
    parser.add_argument("--runs", type=int, default=5, help="seeds per row [default 5]")
    parser.add_argument("--seed", type=int, default=0, help="first seed [default 0]")
    parser.add_argument("--quick", action="store_true", help="shrunk data, epochs, batch and width for CPU "
                        "smoke runs (numbers not comparable with published ones; see `fastres.study`)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N [default: the study's, auto]")
    parser.add_argument("--dataset", help="run the study on another dataset (cifar10, fashion-mnist, PATH.npz)")
    parser.add_argument("--data-dir", help="where datasets are looked for first")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change the base config of every row (rows still apply their deltas)")
    parser.add_argument("--output", default="study-results", help="directory for the table, JSONL and plot "
                        "[default study-results]")
    parser.add_argument("--file", help="a .py or .json file defining studies (see `fastres.study`)")


def run(args: argparse.Namespace, printer=print) -> int:
    if args.file:
        loaded = load_study_file(args.file)
        args.name = args.name or (loaded[0] if len(loaded) == 1 else None)
    if args.list or not args.name:
        if not args.list:
            raise FastresError("name a study to run (see `fastres study --list`)")
        for name in STUDIES:
            s = get_study(name)
            printer(f"{name:18s} {s.description}\n{'':18s} rows: {', '.join(r.name for r in s.rows)}")
        return 0
    if args.runs < 1:
        raise FastresError(f"--runs must be positive, got {args.runs}")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise FastresError(f"--output {args.output} is a file: give a directory (it is created if missing)")
    overrides = parse_set(args.set)
    for key in ("device", "dataset", "data_dir"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    run_study(get_study(args.name), args.runs, args.seed, args.quick, args.output, overrides, printer,
              command_line(args))
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this study (for the report), from the parsed flags."""
    words = ["python -m fastres study", args.name, "--quick" if args.quick else "", f"--runs {args.runs}"]
    words += [f"--seed {args.seed}" if args.seed else "", f"--file {args.file}" if args.file else ""]
    words += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("device", "dataset", "data_dir")
              if getattr(args, k)]
    words += [f"--set {item}" for item in args.set]
    return " ".join(w for w in words if w)


subcommand("study", "run a study: rows of config changes, each over several seeds, vs a baseline")((add_arguments, run))


from . import studies  # noqa: E402,F401  (registers the built-in studies)
