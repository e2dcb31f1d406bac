"""Reporting: the per-epoch table, run statistics with a one-sided t-test, the JSONL log,
the accuracy-vs-time plot, and the environment record (versions, device, git commit).

Nothing here touches tensors on the device: callers pass plain Python numbers.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path

from .data.cache import atomic_path
from .errors import FastresError

# ---------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on t_sf; used for confidence intervals)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if 1.0 - t_sf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b), its squared standard error, and the Welch-Satterthwaite degrees of freedom."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    va, vb = sa * sa / len(a), sb * sb / len(b)
    if va + vb == 0:
        return ma - mb, 0.0, math.inf
    return ma - mb, va + vb, (va + vb) ** 2 / (va * va / (len(a) - 1) + vb * vb / (len(b) - 1))


def welch_interval(a: list[float], b: list[float], level: float = 0.95):
    """(mean(a) - mean(b), low, high): Welch's t-interval, or None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    d, var, df = _welch(a, b)
    if var == 0:
        return d, d, d
    half = t_ppf(1 - (1 - level) / 2, df) * math.sqrt(var)
    return d, d - half, d + half


def welch_test(a: list[float], b: list[float]) -> dict | None:
    """Welch's unequal-variance t-test of mean(a) = mean(b): the difference, t, degrees of freedom
    and two-sided p-value; None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    d, var, df = _welch(a, b)
    if var == 0:
        return {"diff": d, "t": math.copysign(math.inf, d) if d else 0.0, "df": df, "p_two_sided": float(d == 0)}
    t = d / math.sqrt(var)
    return {"diff": d, "t": t, "df": df, "p_two_sided": min(1.0, 2 * t_sf(abs(t), df))}


def summarize(accuracies: list[float], times: list[float], target: float) -> dict:
    """Mean, std (n-1), min, max of accuracy and time; runs reaching the target; and the
    one-sided t-test p-value for H1: mean accuracy > target (None for a single run)."""
    n = len(accuracies)
    mean, std = mean_std(accuracies)
    if n < 2:
        p = None
    elif std == 0:
        p = 0.0 if mean > target else 1.0
    else:
        p = t_sf((mean - target) / (std / math.sqrt(n)), n - 1)
    tmean, tstd = mean_std(times)
    return {"runs": n, "target": target, "acc_mean": mean, "acc_std": std, "acc_min": min(accuracies),
            "acc_max": max(accuracies), "time_mean": tmean, "time_std": tstd, "time_min": min(times),
            "time_max": max(times), "reached": sum(a >= target for a in accuracies), "p_mean_above_target": p}


# ---------------------------------------------------------------- tables


class Table:
    """A fixed-width table printed one row at a time (rows appear as epochs finish)."""

    def __init__(self, columns: list[tuple[str, str]], printer=print):
        self.columns, self.printer = columns, printer   # (name, format spec) pairs
        self.widths = [max(len(name), 9) for name, _ in columns]

    def header(self):
        self.printer("  ".join(name.rjust(w) for (name, _), w in zip(self.columns, self.widths)))

    def row(self, values: dict):
        cells = []
        for (name, spec), w in zip(self.columns, self.widths):
            v = values.get(name)
            cells.append(("" if v is None else format(v, spec)).rjust(w))
        self.printer("  ".join(cells))


def format_summary(s: dict) -> str:
    p = s["p_mean_above_target"]
    return (f"{s['runs']} run(s): accuracy {s['acc_mean']:.4f} +- {s['acc_std']:.4f} "
            f"(min {s['acc_min']:.4f}, max {s['acc_max']:.4f}); time {s['time_mean']:.2f} +- "
            f"{s['time_std']:.2f} s; {s['reached']}/{s['runs']} reached {s['target']}; "
            f"one-sided t-test p = {'n/a' if p is None else format(p, '.3g')} against a mean <= {s['target']}")


# ---------------------------------------------------------------- environment and files


def git_commit() -> str | None:
    """The checkout's commit; FASTRES_COMMIT names it where the code travelled without its .git
    (e.g. a copy of the working tree sent to a GPU machine)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("FASTRES_COMMIT") or None


def environment(device) -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "commit": git_commit(), "host_cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        from .kernels import bn_act_op
        info["bn_tuning"] = dict(bn_act_op.GPU_TUNING)     # fused-kernel launch knobs in use
        info["bn_op"] = bn_act_op.BN_OP                    # how torch.compile sees the fused op
    return info


def output_problem(path) -> str | None:
    """Why a result file cannot be written at `path`, or None: checked (its folder created) before
    the work, so that a bad path costs one error line, not a traceback after the measurements."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if e := _unwritable(path.parent):
        return f"{path} cannot be written: {e.strerror or e}"
    return None


def atomic_write(path: Path, write) -> Path:
    """Call write(tmp_path) then rename onto path, so readers never see a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def write_json(path: Path, obj) -> Path:
    """obj as indented JSON at path, written atomically (the bench scripts' result files)."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def _unwritable(folder: Path) -> OSError | None:
    """Create folder and write (then delete) a probe file in it: the error, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fastres-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e
    return None


def prepare_output(out: Path, names: list[str]) -> None:
    """Create the output folder and check that each file to be written there can be, before any
    training: an unwritable folder found after an hour of training would lose the results."""
    if e := _unwritable(out):
        raise FastresError(f"--output {out} cannot be written: {e.strerror or e}") from None
    if taken := [n for n in names if (out / n).is_dir()]:
        raise FastresError(f"--output {out}: these must be files but are folders: {', '.join(taken)}")


class JsonlLog:
    """Append-only JSON-lines log (one complete line per record, flushed at once)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict):
        if self.path is None:
            return
        line = json.dumps(record, default=_jsonable) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


def _jsonable(obj):
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, (tuple, set, Path)):
        return list(obj) if not isinstance(obj, Path) else str(obj)
    return str(obj)


def plot_accuracy_vs_time(runs: list[dict], path: Path, title: str = "") -> Path:
    """PNG of diagnostic accuracy against timed seconds, one line per run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FastresError("--plot needs matplotlib: pip install 'fastres[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        points = [(e["time_s"], e["eval_acc"]) for e in run["epochs"] if e.get("eval_acc") is not None]
        points.append((run["time_s"], run["accuracy"]))
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=f"seed {run['seed']}")
    ax.set_xlabel("time inside the timer (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(runs) <= 10:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path
