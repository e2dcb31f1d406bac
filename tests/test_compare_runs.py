"""bench/compare_runs.py: reads the three result-file formats and tests the difference of means."""
import json

import pytest

from helpers import load_bench

compare_runs = load_bench("compare_runs")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_each_format_and_matches_scipy(tmp_path, capsys):
    # side a: a fastres run log (start / epoch / run / summary records) and a gpu_check recipe result
    log = write_jsonl(tmp_path / "runs.jsonl", [
        {"type": "start", "config": {"seed": 0}}, {"type": "epoch", "epoch": 1, "eval_acc": 0.5},
        {"type": "run", "seed": 0, "accuracy": 0.93}, {"type": "run", "seed": 1, "accuracy": 0.94},
        {"type": "summary", "runs": 2, "acc_mean": 0.935}])
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"benchmark": "recipe", "runs": [{"type": "run", "seed": 2, "accuracy": 0.95}],
                               "summary": {}}))
    # side b: the airbench reference log, whose runs name their accuracy tta_acc
    ref = write_jsonl(tmp_path / "ref.jsonl", [
        {"type": "start", "what": "reference"}, *({"type": "run", "seed": s, "tta_acc": a}
                                                  for s, a in enumerate((0.93, 0.94, 0.95, 0.96))),
        {"type": "summary", "runs": 4}])
    out = tmp_path / "cmp.json"
    assert compare_runs.main([str(log), str(gpu), "--vs", str(ref), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["a"]["runs"] == 3 and result["a"]["mean"] == pytest.approx(94.0)
    assert result["b"]["runs"] == 4 and result["b"]["mean"] == pytest.approx(94.5)
    # scipy 1.17.1: stats.ttest_ind([93, 94, 95], [93, 94, 95, 96], equal_var=False)
    w = result["welch"]
    assert w["t"] == pytest.approx(-0.5773502691896258, rel=1e-6)
    assert w["p_two_sided"] == pytest.approx(0.5889215492858255, rel=1e-6)
    assert w["ci95"][0] < -0.5 < w["ci95"][1]
    assert "a - b: -0.500 pp" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", [{"type": "run", "seed": 0, "accuracy": 0.9},
                                                 {"type": "run", "seed": 1, "accuracy": 0.91}])
    cases = {
        "dup": ([good, good], "seed 0 appears twice"),
        "empty": ([write_jsonl(tmp_path / "empty.jsonl", [{"type": "start"}])], "no finished run"),
        "percent": ([write_jsonl(tmp_path / "pct.jsonl", [{"type": "run", "seed": 0, "accuracy": 93.9}])],
                    "accuracy in [0, 1]"),
        "garbled": ([tmp_path / "bad.jsonl"], "bad.jsonl:2: not a JSON record"),
        "missing": ([tmp_path / "nothing.jsonl"], "nothing.jsonl"),
    }
    (tmp_path / "bad.jsonl").write_text('{"type": "run", "seed": 0, "accuracy": 0.9}\n{oops\n')
    for name, (files, message) in cases.items():
        assert compare_runs.main([*map(str, files), "--vs", str(good)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("compare_runs: error:") and message in err and "\n" not in err, (name, err)
