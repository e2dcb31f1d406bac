"""Turn a recipe's runs.jsonl (python -m fastres --output DIR) into one result JSON.

    python bench/recipe_json.py DIR/runs.jsonl OUT.json --recipe NAME [--flags "..."] [--fallback]

Used by bench/gpu_check.sh. A run cut short (a deadline, a crash) still leaves its finished runs
in runs.jsonl: they are kept, the summary is computed from them, and "complete" is false.
Exit status 1 (and no file) when no run finished.
"""
from __future__ import annotations

import json
import os
import sys

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastres.errors import Parser  # noqa: E402
from fastres.report import output_problem, summarize, write_json


def build(records: list[dict], recipe: str, flags: str = "", fallback: bool = False) -> dict:
    start = next((r for r in records if r["type"] == "start"), None)
    runs = [r for r in records if r["type"] == "run"]
    if start is None or not runs:
        raise ValueError("no finished run in the log")
    summary = next((r for r in records if r["type"] == "summary"), None)
    complete = summary is not None
    if not complete:     # cut short: the same statistics over the runs that finished
        summary = {"type": "summary", **summarize([r["accuracy"] for r in runs], [r["time_s"] for r in runs],
                                                  start["config"]["target"])}
    return {"benchmark": "recipe", "recipe": recipe, "extra_flags": flags, "fused_bn_fallback": fallback,
            "complete": complete, "runs_asked": start["config"]["runs"], "start": start, "runs": runs,
            "summary": summary}


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("runs_jsonl")
    p.add_argument("out")
    p.add_argument("--recipe", required=True)
    p.add_argument("--flags", default="", help="extra command-line flags the recipe ran with")
    p.add_argument("--fallback", action="store_true", help="the recipe ran with PyTorch's BN after a failed check")
    args = p.parse_args(argv)
    if problem := output_problem(args.out):
        p.error(f"out: {problem}")
    try:
        with open(args.runs_jsonl) as f:
            records = [json.loads(line) for line in f if line.strip()]
        result = build(records, args.recipe, args.flags, args.fallback)
    except (OSError, ValueError) as e:
        print(f"recipe_json: {args.runs_jsonl}: {e}", file=sys.stderr)
        return 1
    write_json(args.out, result)
    s = result["summary"]
    print(f"{args.recipe} {args.flags}: {s['runs']} runs{'' if result['complete'] else ' (cut short)'}, "
          f"acc {s['acc_mean']:.4f} +- {s['acc_std']:.4f}, time {s['time_mean']:.3f} +- {s['time_std']:.3f} s, "
          f"one-sided t-test p = {s['p_mean_above_target']} against a mean <= {s['target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
