"""Compare the test accuracies of two sets of runs read from result files: Welch's t-test.

    python bench/compare_runs.py A.jsonl [A2.jsonl ...] --vs B.jsonl [B2.jsonl ...] [--json OUT]

Each side is any mix of result files: a run log of `python -m fastres --output DIR`
(runs.jsonl, one JSON record per line; the "run" records count), a recipe result of
bench/gpu_check.sh (one JSON object with a "runs" list), or the airbench reference log
(bench/results/*-airbench94-reference.jsonl, whose "run" records name the accuracy tta_acc).
Prints n, mean +- std and min-max of each side in %, then the difference in percentage points
with its 95% Welch interval, t, degrees of freedom and the two-sided p-value. A seed that
appears twice on one side is an error (the same run copied into two files).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastres.errors import Parser  # noqa: E402
from fastres.report import atomic_write, mean_std, output_problem, welch_interval, welch_test


def read_runs(path: Path) -> list[dict]:
    """The finished runs of one result file, each as {"seed", "accuracy"} (accuracy in [0, 1])."""
    text = path.read_text()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("runs"), list):     # a gpu_check.sh result
        records = whole["runs"]
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{path}:{number}: not a JSON record") from None
    runs = []
    for r in records:
        if r.get("type", "run") != "run":
            continue
        acc = r.get("accuracy", r.get("tta_acc"))
        if not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            raise ValueError(f"{path}: a run record without an accuracy in [0, 1] (seed {r.get('seed')})")
        runs.append({"seed": r.get("seed"), "accuracy": float(acc)})
    if not runs:
        raise ValueError(f"{path}: no finished run in it")
    return runs


def side(paths: list[Path]) -> list[float]:
    """The accuracies (in %) of every run in the files of one side; a repeated seed is an error."""
    seen, accs = {}, []
    for path in paths:
        for run in read_runs(path):
            if run["seed"] is not None:
                if run["seed"] in seen:
                    raise ValueError(f"seed {run['seed']} appears twice on one side ({seen[run['seed']]}, {path})")
                seen[run["seed"]] = path
            accs.append(100 * run["accuracy"])
    return accs


def compare(a: list[float], b: list[float]) -> dict:
    out = {}
    for name, values in (("a", a), ("b", b)):
        mean, std = mean_std(values)
        out[name] = {"runs": len(values), "mean": mean, "std": std, "min": min(values), "max": max(values)}
    test = welch_test(a, b)
    if test is not None:
        _, lo, hi = welch_interval(a, b)
        out["welch"] = {**test, "ci95": [lo, hi]}
    return out


def report(result: dict) -> str:
    lines = []
    for name in ("a", "b"):
        s = result[name]
        lines.append(f"{name}: {s['runs']} runs, {s['mean']:.2f} +- {s['std']:.2f}% (min {s['min']:.2f}, "
                     f"max {s['max']:.2f})")
    w = result.get("welch")
    if w is None:
        lines.append("a - b: needs at least 2 runs a side for a test")
    else:
        lines.append(f"a - b: {w['diff']:+.3f} pp, 95% CI [{w['ci95'][0]:+.3f}, {w['ci95'][1]:+.3f}], "
                     f"Welch t = {w['t']:.2f}, df = {w['df']:.1f}, two-sided p = {w['p_two_sided']:.3g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("a", nargs="+", type=Path, help="result files of side a")
    p.add_argument("--vs", nargs="+", type=Path, required=True, metavar="B", help="result files of side b")
    p.add_argument("--json", type=Path, help="also write the comparison here")
    args = p.parse_args(argv)
    if args.json and (problem := output_problem(args.json)):
        p.error(f"--json {problem}")
    try:
        result = compare(side(args.a), side(args.vs))
    except (OSError, ValueError) as e:
        print(f"compare_runs: error: {e}", file=sys.stderr)
        return 2
    result["files"] = {"a": [str(f) for f in args.a], "b": [str(f) for f in args.vs]}
    print(report(result))
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
