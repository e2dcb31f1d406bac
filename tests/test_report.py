"""Statistics, tables and file writing of fastres.report, against closed forms and known values."""
import json
import math

import pytest

from fastres.report import JsonlLog, Table, atomic_write, format_summary, summarize, t_ppf, t_sf, welch_test


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 2.5, 10.0])
def test_t_sf_matches_closed_forms(t):
    # df=1 is the Cauchy distribution; df=2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)
    assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_sf_known_values_and_normal_limit():
    assert t_sf(2.0, 10) == pytest.approx(0.036694, abs=1e-6)      # standard t tables
    assert t_sf(2.0638986, 24) == pytest.approx(0.025, abs=1e-6)
    assert t_sf(1.959964, 1e6) == pytest.approx(0.025, abs=1e-5)     # -> normal
    assert t_ppf(0.975, 24) == pytest.approx(2.0638986, abs=1e-6)


def test_summarize_statistics_and_p_value():
    accs = [0.941, 0.943, 0.939, 0.944]
    s = summarize(accs, [1.0, 2.0, 3.0, 4.0], target=0.94)
    mean = sum(accs) / 4
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 3)
    assert s["acc_mean"] == pytest.approx(mean) and s["acc_std"] == pytest.approx(std)
    assert (s["acc_min"], s["acc_max"], s["reached"], s["runs"]) == (0.939, 0.944, 3, 4)
    assert s["time_mean"] == 2.5 and s["time_std"] == pytest.approx(math.sqrt(5 / 3))
    assert s["p_mean_above_target"] == pytest.approx(t_sf((mean - 0.94) / (std / 2), 3))
    assert 0.05 < s["p_mean_above_target"] < 0.2
    # Clearly above / below the target, and a single run (no test possible).
    assert summarize([0.95, 0.951, 0.952], [1] * 3, 0.94)["p_mean_above_target"] < 0.01
    assert summarize([0.93, 0.931, 0.932], [1] * 3, 0.94)["p_mean_above_target"] > 0.99
    assert summarize([0.95], [1.0], 0.94)["p_mean_above_target"] is None
    assert "1/1 reached" in format_summary(summarize([0.95], [1.0], 0.94))


def test_welch_test_known_values():
    # Reference values from scipy 1.17.1, stats.ttest_ind(a, b, equal_var=False).
    w = welch_test([1, 2, 3], [3, 4, 5])            # equal variances: df = 4, t = -2 / sqrt(2/3)
    assert w["t"] == pytest.approx(-2.449489742783178) and w["df"] == pytest.approx(4.0)
    assert w["p_two_sided"] == pytest.approx(0.07048399691021992, rel=1e-6)
    w = welch_test([1, 2, 3], [2, 4, 6, 8])         # t = -3 / sqrt(1/3 + 5/3), df = 216/53 by hand
    assert w["diff"] == -3 and w["t"] == pytest.approx(-3 / math.sqrt(2)) and w["df"] == pytest.approx(216 / 53)
    assert w["p_two_sided"] == pytest.approx(0.09991286431180087, rel=1e-6)
    assert welch_test([2, 1, 3], [1, 2, 3])["p_two_sided"] == pytest.approx(1.0)   # same values: no evidence
    assert welch_test([1.0], [1, 2]) is None
    assert welch_test([2, 2], [1, 1])["p_two_sided"] == 0.0 and welch_test([1, 1], [1, 1])["p_two_sided"] == 1.0


def test_table_is_fixed_width():
    lines = []
    table = Table([("epoch", "d"), ("acc", ".4f")], lines.append)
    table.header()
    table.row({"epoch": 1, "acc": 0.5})
    table.row({"epoch": 10})
    assert len({len(line) for line in lines}) == 1
    assert lines[1].split() == ["1", "0.5000"] and lines[2].split() == ["10"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(target, lambda p: p.write_bytes(b"ok"))
    assert target.read_bytes() == b"ok"

    def fail(p):
        p.write_bytes(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"ok" and sorted(x.name for x in tmp_path.iterdir()) == ["out.bin"]


def test_jsonl_log_lines_are_json(tmp_path):
    log = JsonlLog(tmp_path / "sub" / "runs.jsonl")
    log.write({"type": "start", "area": (0.1, 0.2)})
    log.write({"type": "run", "accuracy": 0.9})
    records = [json.loads(line) for line in (tmp_path / "sub" / "runs.jsonl").read_text().splitlines()]
    assert records == [{"type": "start", "area": [0.1, 0.2]}, {"type": "run", "accuracy": 0.9}]


def test_git_commit_falls_back_to_fastres_commit(monkeypatch):
    # A checkout copied to a GPU machine without .git still names its commit.
    import subprocess
    from fastres import report

    def no_git(*args, **kwargs):
        raise OSError("git: not found")
    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("FASTRES_COMMIT", "0123abc")
    assert report.git_commit() == "0123abc"
    monkeypatch.delenv("FASTRES_COMMIT")
    assert report.git_commit() is None


def test_summary_line_names_the_test_not_a_probability():
    # It printed "p(mean > target) = 0.996" for runs far below the target: read as a probability,
    # it said the opposite of the data. It is the one-sided t-test's p-value against mean <= target.
    from fastres.report import format_summary
    line = format_summary(summarize([0.55, 0.60, 0.65], [1.6, 1.7, 1.65], 0.91))
    assert "0/3 reached 0.91; one-sided t-test p = 0.996 against a mean <= 0.91" in line and "p(mean" not in line
