"""README rows from gpu_check's result files: one Markdown row per recipe, MFU, kernel, sweep or host-cost file.

    python bench/results_table.py bench/results/2026-12-01-h100-80gb-hbm3-abc1234-*.json
    python bench/results_table.py --breakdown bench/results/...-kernels.json   # time by Triton kernel

Columns as in README's Results table: what | device | date | commit | runs | result | file.
Every number is read from the file, the date and commit from its name
(<date>-<device>-<commit>-<what>.json, as gpu_check.sh writes it), so what README says of a GPU
run is what the run wrote. Files of other kinds (env, loader, ...) are named on stderr
and skipped. A file that cannot be read: one line on stderr, exit status 2.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

# This checkout's fastres, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastres.errors import Parser  # noqa: E402

NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(.+?)-([0-9a-f]{7}|unknown)-(.+)\.json$")


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def device(env: dict) -> str:
    """The device cell of a training file: the GPU's name (or the torch device) and torch's version."""
    return f"{env.get('gpu') or env['device']}, torch {env['torch']}"


def recipe_row(d: dict) -> tuple[str, str, str, str]:
    """(what, device, runs, result) of a recipe file (bench/recipe_json.py)."""
    s, env = d["summary"], d["start"]["env"]
    what = f"`{d['recipe']}`" + (f" `{d['extra_flags']}`" if d["extra_flags"] else "")
    if d.get("fused_bn_fallback"):
        what += " (PyTorch's BN: the fused kernel failed its check)"
    runs = str(s["runs"]) + ("" if d["complete"] else f" of {d['runs_asked']} (cut short)")
    target = s["target"]
    p = s["p_mean_above_target"]
    result = (f"test accuracy {pct(s['acc_mean'])} ± {pct(s['acc_std'])}% (min {pct(s['acc_min'])}%, "
              f"max {pct(s['acc_max'])}%, {s['reached']}/{s['runs']} >= {target:.0%}"
              + (f", one-sided t-test p = {p:.2g} against a mean <= {target:.0%}" if p is not None else "")
              + f"), time-to-accuracy {s['time_mean']:.3f} ± {s['time_std']:.3f} s (min {s['time_min']:.3f} s)")
    return what, device(env), runs, result


def mfu_row(d: dict) -> tuple[str, str, str, str]:
    env = d["env"]
    result = (f"MFU {100 * d['mfu']:.1f}%: {d['total_flops'] / 1e12:.1f} TFLOP per run (training and TTA "
              f"evaluation) in {d['time_s_mean']:.3f} s = {d['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s, "
              f"against a dense matmul rate ({d.get('matmul', 'fp16 on a GPU' if env.get('gpu') else 'on the CPU')}) of {d['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s measured in the same run")
    return f"MFU of `{d['recipe']}`", device(env), str(d["runs"]), result


def kernels_row(d: dict) -> tuple[str, str, str, str]:
    s = d["summary"]
    parts = []
    for net, r in s["per_recipe"].items():
        ms = r["step_ms"]
        part = (f"{net} (batch {r['batch']}): BN fwd+bwd per training step fused {ms['fused']:.3f} ms, "
                f"eager {ms['eager']:.3f} ms, compiled {ms['compiled']:.3f} ms = {r['fused_vs_compiled']:.2f}x "
                f"compiled (goal 1.3x {'met' if r['goal_1_3x_met'] else 'missed'})")
        if "fused_vs_compiled_graph" in r:
            part += f"; as CUDA graphs {r['fused_vs_compiled_graph']:.2f}x"
        if "fused_vs_compiled_as_in_training" in r:     # each pass after a training step's L2 set-up
            t = r["step_ms_as_in_training"]
            part += (f"; with the L2 cache as in training fused {t['fused']:.3f} ms, compiled {t['compiled']:.3f} ms"
                     f" = {r['fused_vs_compiled_as_in_training']:.2f}x")
        parts.append(part)
    # Files before 2026-12-02 judged it on host launches, without saying so.
    parts.append(f"copy bandwidth {d['copy_gbs']:.0f} GB/s; layers >= 32 MB at >= 80% of it (forward and "
                 f"backward, {s.get('pct_copy_timing', 'launched from the host')}): "
                 f"{len(s['layers_ge_32MB_at_80pct_copy'])} of {s['layers_ge_32MB']}")
    what = "fused BN+act kernel (`bench/kernels.py`" + (", cut short)" if not d["complete"] else ")")
    return what, f"{d['device']}, torch {d['torch']}, triton {d['triton']}", "—", "; ".join(parts)


def sweep_row(d: dict) -> tuple[str, str, str, str]:
    """(what, device, runs, result) of a bench/kernels.py --sweep file: the defaults and the best
    on the grid's single timings, then the confirmation's means where the sweep has one."""
    default = d["default"]

    def knobs(tuning: dict) -> str:
        changed = ",".join(f"{k}={v}" for k, v in tuning.items() if default.get(k) != v)
        return f"`{changed}`" if changed else "the defaults"
    nets = ", ".join(net for net, *_ in d["nets"])
    what = f"launch-knob sweep of the fused BN op (`bench/kernels.py --sweep`, {nets}" + (
        ", cut short)" if not d.get("complete", True) else ")")
    # Files before graph timing (the first H100 run's) have no "graphs": they timed host launches.
    timing = "as CUDA graphs" if d.get("graphs") else "in the interpreter" if d.get("smoke") else \
        "launched from the host"
    base = d["default_step_ms"]
    parts = [f"BN fwd+bwd per training step {timing}: defaults "
             + ("not timed" if base is None else f"{base:.3f} ms")]
    if d.get("best"):
        parts.append(f"best {knobs(d['best']['tuning'])} {d['best']['step_ms']:.3f} ms = "
                     f"{d['best_speedup']:.2f}x (single timings)")
    failed = sum("error" in r for r in d["configs"])
    runs = f"{len(d['configs'])} configurations" + (f" ({failed} failed)" if failed else "")
    if d.get("not_timed"):      # the grid's time budget ran out (gpu_check's --sweep-seconds)
        runs += f", {len(d['not_timed'])} not timed (time budget; stages " + \
            ", ".join(map(str, sorted({n["stage"] for n in d["not_timed"]}))) + ")"
    if d.get("confirm"):
        rounds = len(d["confirm"][0]["step_ms"])
        cache = ", the L2 cache as in training" if d.get("confirm_cache") == "as in training" else ""
        parts.append(f"confirmed ({rounds} rounds in turn, means{cache}): " + ", ".join(
            f"{knobs(c['tuning'])} {c['mean_ms']:.3f} ms" for c in d["confirm"]))
        parts.append(f"confirmed speed-up of the best over the defaults {d['confirmed_speedup']:.2f}x")
        runs += f", then {len(d['confirm'])} of them x {rounds}"
    elif d.get("confirm_error"):
        parts.append(f"the confirmation failed ({d['confirm_error']})")
    return what, f"{d['device']}, torch {d['torch']}, triton {d['triton']}", runs, "; ".join(parts)


def host_row(d: dict) -> tuple[str, str, str, str]:
    """(what, device, runs, result) of a bench/host_overhead.py file."""
    env = d["env"]
    parts = [f"{r['variant']} {'compiled' if r['compiled'] else 'eager'} " +
             (f"failed ({r['error']})" if "error" in r else "no figure (6 layers timed no slower than 1)"
              if r["us_per_layer"] is None else f"{r['us_per_layer']:.1f} µs") for r in d["rows"]]
    if d.get("launch_us"):      # launches, and since 2026-12-04 one allocation
        parts.append("one call: " + ", ".join(f"{k} {v:.1f} µs" for k, v in d["launch_us"].items()))
    if d.get("impl_us"):        # since 2026-12-04
        parts.append("the op's implementations, kernels stubbed: " +
                     ", ".join(f"{k} {v:.1f} µs" for k, v in d["impl_us"].items()))
    if d.get("launch_note"):
        parts.append(f"triton_compiled_launcher not timed ({d['launch_note']})")
    what = "host cost per BN layer, forward + backward (`bench/host_overhead.py`" + (
        ", Triton kernels stubbed)" if d["kernels_stubbed"] else ")")
    where = device(env) + (f", triton {env['triton']}" if env.get("triton") else "")
    return what, where, f"{d['iters']} iterations", "; ".join(parts)


# Bytes each of the fused op's kernels must move per element of the layer, in units of its
# element size: the statistics read x; apply reads x and writes y; the backward sums read x and
# dy; dx reads x and dy and writes dx. The finalize kernels move only fp32 partials (no figure).
KERNEL_ACCESSES = {"stats": 1, "apply": 2, "bwd_reduce": 2, "bwd_dx": 3}


def breakdown(d: dict) -> str:
    """The fused op's GPU time by Triton kernel from a bench/kernels.py file (its layers'
    kernels_us): a Markdown table, a row per kernel and layer, with the bandwidth the kernel
    reaches on the bytes it must move, then per recipe each kernel's share of a training step
    (every layer times its count). Times in sequence (the cache as a training step leaves it)
    where the file has them, else those of each kernel replayed alone. Where the file has them
    (GPU runs from 2026-12-04 on), each streaming kernel's row-loop instructions per element
    and the share of the GPU's peak issue rate they take in that time (elements x instructions
    over issue-rate x time): near 100% a kernel is bound by issuing its instructions, well
    below both that and its copy bandwidth it waits on latency."""
    rate = (d.get("issue") or {}).get("thread_instructions_per_s")
    lines = ["| recipe | layer | MiB | kernel | grid | µs alone | µs in sequence | GB/s | % of copy "
             "| instructions/element | % of peak issue |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    steps, alone = {}, set()         # alone: the recipes with a kernel timed only alone
    for layer in d["layers"]:
        fused = layer["variants"]["fused"]
        if "kernels_us" not in fused:
            continue
        _, c, h, _ = layer["shape"]
        count, step = layer.get("count", 1), steps.setdefault(layer.get("net", "?"), {})
        for k in fused["kernels_us"]:
            seq = k.get("us_in_sequence")
            us = k["us"] if seq is None else seq
            accesses = KERNEL_ACCESSES.get(k["kernel"].removesuffix("+finalize"))
            gbs = accesses * layer["mbytes"] * 2**20 / us / 1e3 if accesses and us > 0 else None
            bandwidth = "— | —" if gbs is None else f"{gbs:.0f} | {100 * gbs / d['copy_gbs']:.0f}"
            per_element = k.get("instructions_per_element")
            issue = "— | —"
            if per_element is not None:
                share = math.prod(layer["shape"]) * per_element / (rate * us * 1e-6) if rate and us > 0 else None
                issue = f"{per_element:.1f} | " + ("—" if share is None else f"{100 * share:.0f}")
            lines.append(f"| {layer.get('net', '?')} | {c}@{h} x{count} | {layer['mbytes']:.1f} | {k['kernel']} | "
                         f"{'x'.join(map(str, k['grid']))} | {k['us']:.1f} | "
                         f"{'—' if seq is None else f'{seq:.1f}'} | {bandwidth} | {issue} |")
            step[k["kernel"]] = step.get(k["kernel"], 0.0) + count * us
            if seq is None:
                alone.add(layer.get("net", "?"))
    if not steps:
        raise ValueError("no layer has a kernel breakdown (kernels_us)")
    if not d.get("complete", True):     # an interrupted run: the sums cover only the layers it timed
        lines.append(f"\ncut short: only the {len(d['layers'])} layer(s) timed before the interrupt; a recipe's "
                     "sums below leave out its layers not timed")
    for net, step in steps.items():
        total = sum(step.values())
        how = "some timed alone only" if net in alone else "in sequence"
        lines.append(f"\n{net}, Triton kernels per training step ({how}): " + ", ".join(
            f"{k} {us:.1f} µs ({100 * us / total:.0f}%)" for k, us in step.items()) + f"; sum {total:.1f} µs")
    return "\n".join(lines)


def row(path: Path) -> str | None:
    m = NAME.match(path.name)
    if not m:
        raise ValueError("name is not <date>-<device>-<commit>-<what>.json")
    d = json.loads(path.read_text())
    kind = d.get("benchmark") if isinstance(d, dict) else None
    if kind == "recipe":
        cells = recipe_row(d)
    elif kind == "mfu":
        cells = mfu_row(d)
    elif kind == "host_overhead":
        cells = host_row(d)
    elif kind == "bn_act_sweep":
        cells = sweep_row(d)
    elif isinstance(d, dict) and "layers" in d and "summary" in d:      # bench/kernels.py's result
        cells = kernels_row(d)
    else:
        return None
    what, where, runs, result = cells
    date, _, commit, _ = m.groups()
    return f"| {what} | {where} | {date} | {commit} | {runs} | {result} | `{path.as_posix()}` |"


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--breakdown", action="store_true",
                   help="for bench/kernels.py files: the fused op's time by Triton kernel, not README rows")
    args = p.parse_args(argv)
    if args.breakdown:
        for path in args.files:
            try:
                print(f"{path}:\n{breakdown(json.loads(path.read_text()))}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"results_table: {path}: no breakdown ({type(e).__name__}: {e})", file=sys.stderr)
                return 2
        return 0
    rows = []
    for path in args.files:
        try:
            line = row(path)
        except KeyError as e:
            print(f"results_table: {path}: missing field {e}", file=sys.stderr)
            return 2
        except (OSError, ValueError, TypeError) as e:
            print(f"results_table: {path}: {e}", file=sys.stderr)
            return 2
        if line is None:
            print(f"results_table: {path}: no row format for this kind of file, skipped", file=sys.stderr)
        else:
            rows.append(line)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
