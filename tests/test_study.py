"""Tests of `python -m fastres study` (fastres/study.py): the built-in studies are well formed,
the table and its Welch intervals match hand-computed values, reruns resume, and a tiny study
runs end to end through the CLI on a synthetic .npz.

    OMP_NUM_THREADS=1 pytest tests/test_study.py
"""
import json
import sys
from dataclasses import fields

import pytest
import torch

from fastres import cli, report, runner, studies, study, train
from fastres.config import Config, Recipe
from fastres.report import welch_interval
from fastres.study import Row, Study, config_hash, markdown_table, quick, row_configs
from fastres.train import RunResult
from helpers import write_npz

PNG = b"\x89PNG\r\n\x1a\n"


def differing(a: Config, b: Config) -> set:
    return {f.name for f in fields(Config) if getattr(a, f.name) != getattr(b, f.name)}


# --- the built-in studies -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["backbone", "fashion-backbone", "fashion-hparams", "cifar-ladder", "tricks"])
def test_builtin_study_rows_validate_and_change_only_their_fields(name):
    s = study.get_study(name)
    assert s.baseline in [r.name for r in s.rows] and len(s.rows) >= 5
    for is_quick in (False, True):
        for row, cfg in row_configs(s, is_quick, {}):
            cfg.validate()
            if not is_quick:
                assert differing(cfg, s.base) - {"output", "plot", "save", "parallel"} == \
                    {k for k, v in row.changes.items() if getattr(s.base, k) != v}
    keys = [config_hash(cfg, "cpu") for _, cfg in row_configs(s, False, {})]
    assert len(set(keys)) == len(keys), "two rows of a study train the same config"


def test_backbone_ladder_rows_follow_the_published_steps():
    s = study.get_study("backbone")
    cfgs = [s.base.replace(**r.changes) for r in s.rows]
    assert [c.ladder_step for c in cfgs] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.published for r in s.rows] == [55.9, 56.0, 85.6, 89.7, 90.7, 91.1, 93.7]
    assert all(c.arch == "myrtle-ladder" and c.dataset == "cifar10" for c in cfgs)
    assert (cfgs[0].epochs, cfgs[0].batch_size, cfgs[0].lr, cfgs[0].warmup_frac) == (20, 512, 0.4, 0.2)
    # Step 6 is the BN scale init and the logit scale; before it, 2018 defaults.
    assert [(c.bn_scale_init, c.logit_scale) for c in cfgs[4:6]] == [("uniform", 1.0), ("one", 0.125)]
    fb = study.get_study("fashion-backbone")
    assert fb.base.dataset == "fashion-mnist" and fb.rows[-1].changes["act"] == "celu"
    assert [r.changes for r in fb.rows[:7]] == [r.changes for r in s.rows]


def test_fashion_hparams_rows():
    s = study.get_study("fashion-hparams")
    cfgs = {r.name: s.base.replace(**r.changes) for r in s.rows}
    assert [r.published for r in s.rows] == [91.2, 93.5, 91.2, 90.6, 88.7]
    assert all(c.arch == "resnet18" and c.dataset == "fashion-mnist" for c in cfgs.values())
    got = [(c.schedule, c.lr, c.batch_size, c.epochs, c.erase_p) for c in cfgs.values()]
    assert got == [("constant", 0.01, 128, 10, 0.0), ("onecycle", 0.1, 128, 10, 0.0),
                   ("onecycle", 0.1, 512, 2, 0.0), ("onecycle", 0.4, 512, 2, 0.0), ("onecycle", 0.4, 512, 2, 0.5)]


def test_cifar_ladder_is_cumulative():
    s = study.get_study("cifar-ladder")
    ladder = s.rows[1:]
    for prev, row in zip(ladder, ladder[1:]):
        assert set(prev.changes.items()) <= set(row.changes.items()), row.name
    assert s.baseline == "resnet9" and s.rows[0].changes == {"arch": "resnet18"}


def test_tricks_rows_come_from_the_selected_recipe(monkeypatch):
    cfg = Config(arch="airbench", whiten=True, cutout=12, flip="alternating", tta=2, label_smoothing=0.0,
                 ema_decay=0.0, bn_freeze_scale=True, bias_lr_scale=64, ghost_batch=0)
    monkeypatch.setattr(studies, "select_recipe", lambda dataset, target: Recipe("fake-94", cfg))
    s = study.get_study("tricks")
    # airbench always whitens, so whiten is not a removable trick there; off tricks have no row
    assert [r.name for r in s.rows] == ["full-recipe", "no-frozen-bn-scale", "random-flip", "no-tta", "no-cutout"]
    assert s.base == cfg and "fake-94" in s.description
    assert s.rows[1].changes == {"bn_freeze_scale": False, "bias_lr_scale": 1.0, "bias_decay_scale": 1.0}
    resnet = Config(arch="resnet9", whiten=True, label_smoothing=0.2, ema_decay=0.99, lookahead=True, ghost_batch=32,
                    cutout=0, tta=0, flip="random")
    monkeypatch.setattr(studies, "select_recipe", lambda dataset, target: Recipe("fake", resnet))
    assert [r.name for r in study.get_study("tricks").rows] == [
        "full-recipe", "no-whiten", "no-label-smoothing", "no-ema-lookahead", "no-ghost-bn"]


def test_quick_shrinks_exactly_what_the_docstring_says():
    cfg = Config(epochs=20, batch_size=512, width=1.0, compile=True, eval_every=1, lr=0.4)
    q = quick(cfg)
    assert (q.train_subset, q.test_subset, q.epochs, q.batch_size, q.width, q.compile, q.eval_every) == \
        (10000, 2000, 5.0, 128, 0.25, False, 0)
    assert differing(q, cfg) == {"train_subset", "test_subset", "epochs", "batch_size", "width", "compile",
                                 "eval_every"}
    assert quick(Config(batch_size=32)).batch_size == 16


def test_study_definition_errors():
    with pytest.raises(study.FastresError, match="unknown config fields"):
        Study("s", "", Config(), [Row("a", {"not_a_field": 1})])
    with pytest.raises(study.FastresError, match="unique names"):
        Study("s", "", Config(), [Row("a"), Row("a")])
    with pytest.raises(study.FastresError, match="baseline 'z'"):
        Study("s", "", Config(), [Row("a")], baseline="z")
    with pytest.raises(study.FastresError, match="row 'b'.*--lr must be positive"):
        row_configs(Study("s", "", Config(), [Row("a"), Row("b", {"lr": -1.0})]), False, {})
    for name in ("../escape", "a/b", "..", ".hidden", ""):           # the name is part of the file names
        with pytest.raises(study.FastresError, match="no '/' or '..'"):
            Study(name, "", Config(), [Row("a")])
    for published in (0.91, 1, 0, -5.0, 101.0, float("nan")):          # in %, as the table's column
        with pytest.raises(study.FastresError, match=f"published {published} is not an accuracy in %"):
            Study("s", "", Config(), [Row("a", {}, published)])
    assert Study("s", "", Config(), [Row("a", {}, 91.0), Row("b", {}, 100)]).rows[0].published == 91.0
    with pytest.raises(study.FastresError, match="row 'b': runs, seed cannot be set in a study: its seeds come "
                                                 "from --seed and --runs"):
        Study("s", "", Config(), [Row("a"), Row("b", {"runs": 3, "seed": 1})])
    with pytest.raises(study.FastresError, match="base: output cannot be set in a study"):
        Study("s", "", Config(output="x"), [Row("a")], explicit=("output",))


# --- statistics and the table ---------------------------------------------------------------

def test_welch_interval_against_the_t_table():
    # Equal n and variances: df = 4 exactly; t(0.975, 4) = 2.776445 (printed t tables).
    d, lo, hi = welch_interval([1, 2, 3], [3, 4, 5])
    half = 2.776445 * (2 / 3) ** 0.5
    assert d == pytest.approx(-2) and lo == pytest.approx(-2 - half, abs=1e-4) and hi == pytest.approx(-2 + half, abs=1e-4)
    # Unequal: va = 1/3, vb = 5/3, df = 216/53 (Welch-Satterthwaite by hand); t between t(4) and t(5).
    d, lo, hi = welch_interval([1, 2, 3], [2, 4, 6, 8])
    t = (hi - d) / 2 ** 0.5
    assert d == pytest.approx(-3) and 2.571 < t < 2.776 and t == pytest.approx(report.t_ppf(0.975, 216 / 53))
    assert welch_interval([1.0], [1, 2]) is None and welch_interval([1, 2], [3.0]) is None
    assert welch_interval([2, 2], [1, 1]) == (1, 1, 1)


def test_markdown_table_hand_computed():
    s = Study("hand", "", Config(), [Row("base", {}, 91.0), Row("better", {"lr": 0.8}), Row("single", {"width": 0.5}),
                                     Row("missing", {"epochs": 3.0})])
    rec = lambda acc, t: {"accuracy": acc, "time_s": t}
    runs = {"base": [rec(0.90, 10.0), rec(0.92, 12.0)], "better": [rec(0.93, 4.0), rec(0.95, 4.0)],
            "single": [rec(0.5, 1.0)]}
    lines = markdown_table(s, runs).splitlines()
    assert lines[0].startswith("| row | changes | runs | accuracy") and "Δ vs base" in lines[0]
    # base: 91.00 +- 1.41 (std of 90, 92), time 11.0 +- 1.41
    assert lines[2] == "| base | — | 2 | 91.00 ± 1.41 | 11.0 ± 1.41 | (baseline) | 91.0 |"
    # better - base = +3.00 pp; each side var/n = 2/2 = 1, df = 4 / (1 + 1) = 2, t(0.975, 2) = 4.302653
    half = 4.302653 * 2 ** 0.5
    assert lines[3] == (f"| better | lr=0.8 | 2 | 94.00 ± 1.41 | 4.00 ± 0.00 | "
                        f"+3.00 [{3 - half:+.2f}, {3 + half:+.2f}] |  |")
    assert lines[4] == "| single | width=0.5 | 1 | 50.00 | 1.00 | n/a |  |"     # no std from one run
    assert lines[5] == "| missing | epochs=3 | 0 | | | |  |"


def test_config_hash_ignores_bookkeeping_but_not_training_or_device():
    cfg = Config()
    h = config_hash(cfg, "cpu")
    assert config_hash(cfg.replace(seed=5, output="x", device="cpu"), "cpu") == h
    assert config_hash(cfg.replace(lr=0.5), "cpu") != h
    assert config_hash(cfg, "cuda") != h
    assert config_hash(cfg.replace(threads=2), "cpu") != h                   # CPU times depend on threads
    assert config_hash(cfg.replace(threads=2), "cuda") == config_hash(cfg, "cuda")


def test_runs_at_other_cpu_thread_counts_are_other_rows(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)               # what threads=0 gives here
    run = lambda **overrides: study.run_study(small_study(), runs=1, output=str(tmp_path), printer=lambda *a: None,
                                              overrides=overrides)["jsonl"]
    run(threads=1)
    run(threads=2)                          # not the threads=1 runs again: trained anew
    run()                                   # threads=0 is 2 threads here: the same rows as threads=2
    assert len(fake.calls) == 6
    records = [json.loads(line) for line in run().read_text().splitlines()]
    assert sorted(r["config"]["threads"] for r in records) == [1, 1, 1, 2, 2, 2]


# --- resuming --------------------------------------------------------------------------------

class FakeRunMany:
    """Stands in for runner.run_many: records (lr, seeds) and returns lr-dependent accuracies."""

    def __init__(self, interrupt_at=None, diverge_at=None):
        self.calls, self.configs, self.interrupt_at, self.diverge_at = [], [], interrupt_at, diverge_at  # (lr, seed)

    def __call__(self, cfg, printer=print, seeds=None, on_run=None):
        self.calls.append((cfg.lr, list(seeds)))
        self.configs.append(cfg)
        results = []
        for s in seeds:                 # in turn, each handed to on_run as soon as it is done
            if self.interrupt_at == (cfg.lr, s):
                raise KeyboardInterrupt
            if self.diverge_at == (cfg.lr, s):
                train.check_finite(torch.tensor([1.0, float("nan")]), 0, cfg, 10)    # train.py's own NaN error
            results.append(RunResult(s, accuracy=min(0.99, 0.5 + cfg.lr / 2 + 0.01 * s), time_s=1.0 + s))
            if on_run:
                on_run(results[-1])
        return results, {}


def small_study(lr_b=0.2):
    return Study("resume", "resume test", Config(dataset="x.npz", device="cpu", epochs=1.0, lr=0.1),
                 [Row("a", {}), Row("b", {"lr": lr_b}), Row("c", {"lr": 0.3})])


def test_rerun_trains_nothing_and_a_changed_row_reruns(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    out = tmp_path / "out"
    first = study.run_study(small_study(), runs=2, output=str(out), printer=lambda *a: None)
    assert fake.calls == [(0.1, [0, 1]), (0.2, [0, 1]), (0.3, [0, 1])]
    assert "| b | lr=0.2 | 2 | 60.50 ± 0.71 |" in first["table"]
    records = [json.loads(line) for line in first["jsonl"].read_text().splitlines()]
    assert len(records) == 6 and {(r["row"], r["seed"]) for r in records} == {(r, s) for r in "abc" for s in (0, 1)}
    assert all(r["study"] == "resume" and len(r["config_hash"]) == 12 and r["env"]["torch"] for r in records)

    fake.calls.clear()
    again = study.run_study(small_study(), runs=2, output=str(out), printer=lambda *a: None)
    assert fake.calls == [] and again["table"] == first["table"]

    with open(first["jsonl"], "a") as f:          # damaged or edited lines are skipped ...
        f.write('[1]\n5\n{"type": "run", "study": "resume"}\n{"type": "run", "study": "resume", "row": "a", '
                '"seed": 2, "config_hash": "x", "accuracy": "high", "time_s": 1}\n')
        f.write('{"type": "run", "study": "res')  # ... and a run killed mid-write leaves a partial line
    study.run_study(small_study(lr_b=0.25), runs=3, output=str(out), printer=lambda *a: None)
    assert fake.calls == [(0.1, [2]), (0.25, [0, 1, 2]), (0.3, [2])]
    md = (out / "study-resume.md").read_text()
    assert "| b | lr=0.25 | 3 |" in md and (out / "study-resume.png").read_bytes()[:8] == PNG
    fake.calls.clear()
    study.run_study(small_study(lr_b=0.25), runs=3, output=str(out), printer=lambda *a: None)
    assert fake.calls == []                       # the runs appended after the partial line were kept


def test_an_interrupted_row_keeps_its_finished_seeds_and_resumes_with_the_missing_ones(tmp_path, monkeypatch):
    fake = FakeRunMany(interrupt_at=(0.2, 2))       # Ctrl-C during row b's third seed
    monkeypatch.setattr(runner, "run_many", fake)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(small_study(), runs=3, output=str(tmp_path), printer=lambda *a: None)
    records = [json.loads(line) for line in (tmp_path / "study-resume.jsonl").read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in records] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    resumed = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", resumed)
    out = study.run_study(small_study(), runs=3, output=str(tmp_path), printer=lambda *a: None)
    assert resumed.calls == [(0.2, [2]), (0.3, [0, 1, 2])]
    assert "| b | lr=0.2 | 3 |" in out["table"]


def test_a_diverging_row_is_recorded_as_diverged_and_the_study_goes_on(tmp_path, monkeypatch):
    fake = FakeRunMany(diverge_at=(0.2, 1))        # row b: a NaN loss at its second seed
    monkeypatch.setattr(runner, "run_many", fake)
    printed = []
    out = study.run_study(small_study(), runs=3, output=str(tmp_path), printer=printed.append)
    assert fake.calls == [(0.1, [0, 1, 2]), (0.2, [0, 1, 2]), (0.3, [0, 1, 2])]   # b: stopped at seed 1
    assert "| b | lr=0.2 | 2 | diverged (seed 1) | | |  |" in out["table"]
    assert "| c | lr=0.3 | 3 |" in out["table"] and "diverged (seed 1)" in out["markdown"].read_text()
    assert any("b: diverged at seed 1 (loss became nan at step 1" in line for line in printed)
    records = [json.loads(line) for line in out["jsonl"].read_text().splitlines()]
    bad = [r for r in records if r["row"] == "b" and r["seed"] == 1]
    assert len(bad) == 1 and bad[0]["diverged"].startswith("loss became nan") and "accuracy" not in bad[0]
    fake.calls.clear()                              # resumed, with more seeds: b is not trained again
    again = study.run_study(small_study(), runs=4, output=str(tmp_path), printer=lambda *a: None)
    assert fake.calls == [(0.1, [3]), (0.3, [3])] and "| b | lr=0.2 | 2 | diverged (seed 1) |" in again["table"]


def test_quick_keeps_explicit_values_and_the_report_shows_the_values_used(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    spec = {"name": "keep", "base": {"dataset": "x.npz", "device": "cpu", "lr": 0.1, "eval_every": 3},
            "rows": [{"name": "a"}, {"name": "b", "changes": {"lr": 0.2, "test_subset": 300, "epochs": 8.0}}]}
    (tmp_path / "keep.json").write_text(json.dumps(spec))
    monkeypatch.setattr(study, "STUDIES", dict(study.STUDIES))
    s = study.get_study(study.load_study_file(str(tmp_path / "keep.json"))[0])
    out = study.run_study(s, runs=1, is_quick=True, output=str(tmp_path), printer=lambda *a: None,
                          overrides={"train_subset": 500}, command="the command")
    a, b = fake.configs
    assert (a.train_subset, a.test_subset, a.eval_every, a.epochs) == (500, 2000, 3, 2.5)   # --set, quick, base
    assert (b.train_subset, b.test_subset, b.eval_every, b.epochs) == (500, 300, 3, 2.0)    # the row's, x0.25
    md = out["markdown"].read_text()
    assert "QUICK MODE**: train_subset 500, test_subset 2000/300, epochs x0.25, batch_size x0.25" in md
    assert "eval_every 3" in md and "| b | lr=0.2, test_subset=300, epochs=2 | 1 |" in md     # epochs as trained


def test_on_a_cpu_a_study_compiles_only_when_asked_as_train_does(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    gpu_recipe = Study("gpu", "", Config(dataset="x.npz", device="cpu", lr=0.1, compile=True), [Row("a")])
    for overrides in ({}, {"compile": True}):
        study.run_study(gpu_recipe, runs=1, output=str(tmp_path), printer=lambda *a: None, overrides=overrides)
    asked = Study("gpu", "", Config(dataset="x.npz", device="cpu", lr=0.1, compile=True), [Row("a", {"compile": True})])
    study.run_study(asked, runs=1, output=str(tmp_path / "2"), printer=lambda *a: None)
    assert [cfg.compile for cfg in fake.configs] == [False, True, True]
    assert [cfg.compile for _, cfg in row_configs(gpu_recipe, False, {})] == [True]      # not on a CPU: kept


def test_without_matplotlib_the_study_says_so_before_training_and_writes_no_png(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_many", FakeRunMany())
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # as if not installed: import fails
    printed = []
    out = study.run_study(small_study(), runs=1, output=str(tmp_path), printer=printed.append)
    notes = [i for i, line in enumerate(printed) if "matplotlib is not installed" in line]
    assert len(notes) == 1 and notes[0] < min(i for i, line in enumerate(printed) if line.startswith("[1/3]"))
    assert out["png"] is None and not (tmp_path / "study-resume.png").exists() and out["markdown"].exists()


def test_damaged_jsonl_lines_are_skipped_and_counted_once(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    first = study.run_study(small_study(), runs=1, output=str(tmp_path), printer=lambda *a: None)
    good = json.loads(first["jsonl"].read_text().splitlines()[0])         # row a, seed 0
    with open(first["jsonl"], "ab") as f:
        f.write(b'\xff\xfe not UTF-8\n' + b"[" * 100000 + b"\n\n")        # bad bytes; nested past recursion
        for damage in ({"row": ["a"]}, {"row": {"a": 1}}, {"seed": "1"}, {"seed": True}, {"config_hash": None}):
            f.write(json.dumps({**good, "seed": 7, **damage}).encode() + b"\n")
    fake.calls.clear()
    printed = []
    study.run_study(small_study(), runs=1, output=str(tmp_path), printer=printed.append)
    assert fake.calls == []                                                # the whole records were kept
    assert [line for line in printed if "line(s) skipped" in line] == [
        f"{first['jsonl']}: 7 line(s) skipped (cut short, damaged or edited): those runs train again"]


def test_quick_and_full_results_are_kept_apart(tmp_path, monkeypatch):
    fake = FakeRunMany()
    monkeypatch.setattr(runner, "run_many", fake)
    study.run_study(small_study(), runs=1, output=str(tmp_path), printer=lambda *a: None)
    study.run_study(small_study(), runs=1, is_quick=True, output=str(tmp_path), printer=lambda *a: None)
    assert len(fake.calls) == 6
    assert (tmp_path / "study-resume-quick.jsonl").exists() and (tmp_path / "study-resume.jsonl").exists()
    assert "QUICK MODE" in (tmp_path / "study-resume-quick.md").read_text()


# --- end to end through the CLI ----------------------------------------------------------------

def test_user_study_from_json_end_to_end(tmp_path, capsys):
    data = write_npz(tmp_path / "tiny.npz")
    spec = {"name": "tiny-widths", "description": "width on patterns", "baseline": "narrow",
            "base": {"dataset": str(data), "arch": "resnet9", "act": "relu", "width": 0.5, "epochs": 8,
                     "batch_size": 128, "lr": 0.2, "schedule": "onecycle", "crop_pad": 1, "tta": 1,
                     "eval_batch_size": 256, "erase_area": [0.02, 0.2]},
            "rows": [{"name": "narrow", "changes": {}}, {"name": "wide", "changes": {"width": 1.0}, "published": 99.0}]}
    path = tmp_path / "study.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    argv = ["study", "--file", str(path), "--quick", "--runs", "2", "--device", "cpu", "--output", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "QUICK MODE" in printed and "NOT comparable" in printed
    records = [json.loads(line) for line in (out / "study-tiny-widths-quick.jsonl").read_text().splitlines()]
    assert sorted((r["row"], r["seed"]) for r in records) == [("narrow", 0), ("narrow", 1), ("wide", 0), ("wide", 1)]
    assert all(r["config"]["width"] in (0.125, 0.25) and r["config"]["epochs"] == 2.0 for r in records)
    assert all(r["accuracy"] > 0.5 for r in records)                   # learns: chance is 0.25
    md = (out / "study-tiny-widths-quick.md").read_text()
    assert "| narrow | — | 2 |" in md and "(baseline)" in md and "| 99.0 |" in md
    assert "python -m fastres study tiny-widths --quick --runs 2 --file" in md and "device(s) cpu" in md
    assert (out / "study-tiny-widths-quick.png").read_bytes()[:8] == PNG
    assert cli.main(argv) == 0                                         # resumed: nothing trains
    assert "all 2 seeds already in" in capsys.readouterr().out


def test_builtin_backbone_ladder_quick_on_npz(tmp_path, capsys):
    data = write_npz(tmp_path / "tiny.npz", channels=3)
    out = tmp_path / "out"
    code = cli.main(["study", "backbone", "--quick", "--runs", "1", "--device", "cpu", "--dataset", str(data),
                     "--output", str(out), "--set", "eval_batch_size=256", "--set", "epochs=4"])
    assert code == 0
    md = (out / "study-backbone-quick.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == [r.name for r in study.get_study("backbone").rows]
    assert all(" | 1 | " in r and r.split(" | ")[5] in ("(baseline)", "n/a") for r in rows)
    steps = {json.loads(line)["config"]["ladder_step"] for line in (out / "study-backbone-quick.jsonl").open()}
    assert steps == set(range(1, 8))


def test_user_study_from_python_file(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "STUDIES", dict(study.STUDIES))
    path = tmp_path / "mine.py"
    path.write_text("from fastres.config import Config\n"
                    "from fastres.study import Row, Study, register_study\n"
                    "register_study(Study('widths', 'width', base=Config(dataset='fashion-mnist', width=0.5),\n"
                    "                     rows=[Row('w0.5'), Row('w0.25', {'width': 0.25})]))\n")
    assert study.load_study_file(str(path)) == ["widths"]
    s = study.get_study("widths")
    assert [cfg.width for _, cfg in row_configs(s, False, {})] == [0.5, 0.25] and s.baseline == "w0.5"


@pytest.mark.parametrize("argv, message", [
    (["study", "nope"], "unknown study 'nope'"),
    (["study"], "name a study"),
    (["study", "backbone", "--runs", "0"], "--runs must be positive"),
    (["study", "backbone", "--set", "bogus=1"], "--set 'bogus=1'"),
    (["study", "backbone", "--set", "lr=fast"], "not a valid float"),
    (["study", "backbone", "--set", "seed=3"], "--set seed: cannot be set in a study: its seeds come from --seed"),
    (["study", "backbone", "--set", "plot=false", "--set", "save=true"], "--set plot, save: cannot be set"),
    (["study", "backbone", "--file", "/nonexistent.json"], "no such file"),
    (["study", "backbone", "--output", "a_file"], "--output a_file is a file: give a directory"),
    (["study", "--file", "broken.py"], "--file broken.py: SyntaxError: '[' was never closed"),
    (["study", "--file", "raises.py"], "--file raises.py: NameError: name 'undefined_name' is not defined"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "broken.py").write_text("rows = [\n")
    (tmp_path / "raises.py").write_text("undefined_name\n")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("spec, message", [
    ("str", "a study is an object with a name and a list of row objects"),
    (["x"], "a study is an object with a name and a list of row objects"),
    ({"name": "a", "rows": [{"name": "r", "changes": ["lr"]}]}, "a study needs name and rows"),
    ({"name": "a", "rows": [{"name": "r", "changes": {"lr": None}}]}, "row 'r': --lr must be of type float"),
    ({"name": "a", "base": {"batch_size": 64.5}, "rows": [{"name": "r"}]}, "--batch-size must be of type int"),
    ({"name": "a", "rows": [{"name": "r", "changes": {"erase_area": [0.1]}}]}, "--erase-area must be two numbers"),
    ({"name": "a", "rows": [{"name": "r", "changes": {"whiten": "no"}}]}, "--whiten must be of type bool"),
    ({"name": 5, "rows": [{"name": "r"}]}, "name, description, baseline and source must be text"),
    ({"name": "a", "description": 5, "rows": [{"name": "r"}]}, "name, description, baseline and source must be"),
    ({"name": "a", "rows": [{"name": "r", "published": "high"}]}, "a published accuracy that is a number"),
    ({"name": "a", "base": {"runs": 3}, "rows": [{"name": "r"}]}, "'a', base: runs cannot be set in a study"),
    ({"name": "../../etc/x", "rows": [{"name": "r"}]}, "no '/' or '..'"),
    ({"name": "a", "rows": [{"name": "r", "published": 0.91}]}, "published 0.91 is not an accuracy in %"),
    ({"name": "a", "basline": "r", "rows": [{"name": "r"}]},
     "unknown study keys: basline (allowed: name, description, recipe, base, rows, baseline, source)"),
    ({"name": "a", "rows": [{"name": "r"}, {"name": "s", "chnages": {"lr": 0.1}, "runs": 3}]},
     "unknown row keys: chnages, runs (allowed: name, changes, published)"),
])
def test_bad_study_files_are_one_line_before_any_training(spec, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained before the error"))
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert cli.main(["study", "--file", str(tmp_path / "s.json"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastres: error:") and message in err[0], err


def test_list_names_every_study(capsys):
    assert cli.main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in study.STUDIES)
