"""Model FLOP utilisation (MFU) of a training recipe.

    python bench/mfu.py --recipe cifar10-94 --out /tmp/mfu.json      # GPU
    python bench/mfu.py --smoke --out /tmp/mfu.json                           # CPU plumbing, seconds
    python bench/mfu.py --from-json RESULT.json --out mfu.json   # from a gpu_check.sh recipe result

FLOPs of a run are counted from the model (fastres.model.model_flops: 2 x multiply-accumulates
of every conv and linear layer per image): training costs 3x the forward (forward, input
gradient, weight gradient) per training image seen, and the final evaluation 1x the forward
per test image and TTA view. Dividing by the run's time-to-accuracy gives achieved FLOP/s;
dividing that by a dense matmul rate measured in the same process (fp16 8192^3 on GPU, fp32
2048^3 on CPU, 512^3 with --smoke) gives MFU, so --from-json refuses a file timed on another
device. BN, activations, pooling and the optimiser are not counted (they are memory-bound), so
MFU understates how busy the GPU is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import date

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from fastres.config import Config, get_recipe
from fastres.errors import FastresError, Parser
from fastres.evaluate import tta_views
from fastres.model import build_model, model_flops
from fastres.report import atomic_write, environment, output_problem
from fastres.runner import resolve_device, run_many
from fastres.train import RunResult


def matmul_flops_per_s(device: torch.device, n: int, dtype: torch.dtype, iters: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (time.perf_counter() - t0)


def run_flops(cfg, in_channels: int, image_size: int, num_classes: int, train_images: int, test_images: int,
              steps: int) -> dict:
    model = build_model(cfg, in_channels, num_classes, image_size)
    forward = model_flops(model, in_channels, image_size)           # per image
    train = 3 * forward * steps * cfg.batch_size
    views = len(tta_views(cfg.tta))
    if cfg.tta and cfg.tta_fraction < 1:     # selective TTA: one plain pass, full TTA for the unsure
        views = 1 + max(1, round(cfg.tta_fraction * test_images)) * views / test_images
    evaluate = round(forward * test_images * views)
    return {"forward_flops_per_image": forward, "train_flops": train, "eval_flops": evaluate,
            "total_flops": train + evaluate}


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="cifar10-94")
    p.add_argument("--runs", type=int, default=3, help="timed runs (after the compile warm-up)")
    p.add_argument("--smoke", action="store_true", help="tiny fashion-cpu run on CPU")
    p.add_argument("--from-json", default="", help="a recipe result of bench/gpu_check.sh: no new runs")
    p.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error(f"--runs must be positive, got {args.runs}")
    if args.out and (problem := output_problem(args.out)):
        p.error(f"--out {problem}")
    try:
        return measure(args)
    except FastresError as e:            # unknown recipe, missing data, ...: one line
        print(f"mfu.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mfu.py: interrupted; nothing written", file=sys.stderr)
        return 130


def same_machine(run_env: dict, device: torch.device) -> None:
    """The matmul rate must come from the machine that timed the run: a GPU run's file read on
    another machine (a CPU, another GPU) gave an MFU of 25348% (2026-12-03 audit)."""
    here = environment(device)
    if run_env.get("device") != here.get("device") or run_env.get("gpu") != here.get("gpu"):
        def name(env):
            return env.get("gpu") or env.get("device") or "an unnamed device"
        raise FastresError(f"--from-json: the run was timed on {name(run_env)}, this process runs on {name(here)}; "
                           "measure its MFU on the machine that ran it")


def measure(args: argparse.Namespace) -> int:
    if args.from_json:      # the runs gpu_check.sh already timed: only the matmul rate is measured
        try:
            record = json.loads(open(args.from_json).read())
            config = {k: tuple(v) if isinstance(v, list) else v for k, v in record["start"]["config"].items()}
            cfg, summary = Config(**config), record["summary"]
            results = [RunResult(**r) for r in record["runs"] if r.pop("type", None) == "run"]
            args.recipe = record["recipe"]
            run_env = record["start"]["env"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FastresError(f"--from-json {args.from_json}: not a recipe result of bench/gpu_check.sh "
                               f"({type(e).__name__}: {e})") from e
        same_machine(run_env, resolve_device(cfg.device))
    else:
        cfg = get_recipe(args.recipe).config
        if not args.smoke and cfg.compile and resolve_device(cfg.device).type == "cpu":
            raise FastresError(f"recipe {args.recipe} is a GPU recipe and this machine has no CUDA device "
                               "(on a CPU: --smoke, or --recipe fashion-cpu)")
        if args.smoke:
            cfg = get_recipe("fashion-cpu").config.replace(epochs=1, train_subset=1024, test_subset=256,
                                                            runs=1, device="cpu", eval_every=0)
        else:
            cfg = cfg.replace(runs=args.runs, eval_every=0)
        results, summary = run_many(cfg, printer=lambda *a: print(*a, file=sys.stderr))
    device = resolve_device(cfg.device)
    if args.from_json and "image_size" in record["start"]:     # shapes as the run logged them
        start = record["start"]
        shape = (start["channels"], start["image_size"], start["classes"], start["test_images"])
    else:
        from fastres.data import load_dataset
        ds = load_dataset(cfg.dataset, cfg.data_dir, download=False)
        shape = (ds.train_x.shape[3], ds.train_x.shape[1], ds.num_classes, cfg.test_subset or ds.test_x.shape[0])
    channels, image_size, classes, test_images = shape
    flops = run_flops(cfg, channels, image_size, classes, 0, test_images, results[0].steps)
    n = 8192 if device.type == "cuda" else 512 if args.smoke else 2048
    peak = (matmul_flops_per_s(device, n, torch.float16) if device.type == "cuda"
            else matmul_flops_per_s(device, n, torch.float32, iters=5))
    achieved = flops["total_flops"] / summary["time_mean"]
    record = {"benchmark": "mfu", "date": date.today().isoformat(), "recipe": args.recipe if not args.smoke else "smoke",
              "env": environment(device), "config": asdict(cfg), **flops, "time_s_mean": summary["time_mean"],
              "runs": summary["runs"], "acc_mean": summary["acc_mean"], "achieved_flops_per_s": achieved,
              "matmul_flops_per_s": peak, "mfu": achieved / peak}
    record["matmul"] = "fp16 8192^3 on the GPU" if device.type == "cuda" else f"fp32 {n}^3 on the CPU"
    print(f"{record['recipe']}: {flops['total_flops'] / 1e12:.3f} TFLOP in {summary['time_mean']:.3f} s = "
          f"{achieved / 1e12:.2f} TFLOP/s; matmul {peak / 1e12:.2f} TFLOP/s; MFU {100 * record['mfu']:.1f}%")
    if args.out:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=str)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
