"""Run a configuration N times (seeds seed, seed+1, ...) and gather the results.

Shared by `python -m fastres train` and `study`: load the data once, upload it once, build (and
compile) the model once, then train each seed. Under torchrun (distributed.py) the seeds are
either trained together by all ranks (--parallel data) or split over the ranks and gathered
(--parallel runs); rank 0 alone prints and writes.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from . import distributed
from .distributed import resolve_device
from .config import Config
from .data import load_dataset, upload
from .errors import FastresError
from .report import (JsonlLog, Table, atomic_write, environment, format_summary, plot_accuracy_vs_time,
                     prepare_output, summarize)
from .train import RunResult, build_nets, train, unwrap, warm_up

EPOCH_COLUMNS = [("run", "d"), ("epoch", "d"), ("train_loss", ".4f"), ("train_acc", ".4f"),
                 ("eval_acc", ".4f"), ("tta_acc", ".4f"), ("time_s", ".2f")]


def configure_torch(cfg: Config, device: torch.device):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def user_error(e: BaseException, cfg: Config) -> BaseException:
    """Out of memory, on the GPU or the CPU, as the one-line error a user can act on."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return FastresError(f"CUDA out of memory at --batch-size {cfg.batch_size}; try a smaller batch size")
    if isinstance(e, RuntimeError) and "can't allocate memory" in str(e):     # PyTorch's CPU allocator
        return FastresError(f"out of memory on the CPU at --batch-size {cfg.batch_size} "
                            f"({str(e).splitlines()[0]}); try a smaller batch or width")
    if isinstance(e, ValueError) and str(e).startswith("Expected more than 1 value per channel"):
        # a batch norm over 1x1 maps (resnet18's last stage) with one image per (ghost) batch
        return FastresError(f"--batch-size {cfg.batch_size}" + (f" with --ghost-batch {cfg.ghost_batch}"
                            if cfg.ghost_batch else "") + f" leaves a batch norm of {cfg.arch} one value per "
                            f"channel to normalise ({str(e).splitlines()[0]}); use larger batches")
    return e


def run_many(cfg: Config, printer=print, seeds: list[int] | None = None,
             on_run: Callable[[RunResult], None] | None = None) -> tuple[list[RunResult], dict]:
    """Train cfg.runs seeds (or the given ones); print the per-epoch table and a summary;
    write the JSONL log, plot and weights into cfg.output when set. on_run gets each finished
    run as soon as it is back (under torchrun --parallel runs: on every rank, once its round of
    world-size runs is gathered)."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.runs)) if seeds is None else seeds
    world, device = distributed.setup(cfg, jobs=len(seeds))   # World() and None without torchrun
    cfg = cfg.replace(parallel=world.mode)
    device = device or resolve_device(cfg.device)
    if device.type == "cuda" and device.index is not None:
        # --device cuda:N: make it the current device, as torchrun's ranks do (distributed.setup),
        # so that whatever launches on "the current device" (Triton kernels, bare synchronize
        # calls) works on the training GPU.
        torch.cuda.set_device(device)
    printer = world.main_only(printer)
    configure_torch(cfg, device)
    with world.main_first():                                        # one download / cache build per node
        host = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)   # disk I/O: untimed
    host = subset(host, cfg.train_subset, cfg.test_subset)
    cfg.validate(train_size=host.train_x.shape[0], image_size=min(host.train_x.shape[1:3]))
    out = Path(cfg.output) if cfg.output else None
    if out and world.is_main:
        prepare_output(out, ["runs.jsonl"] + (["accuracy_vs_time.png"] if cfg.plot else [])
                       + ([f"weights-seed{s}.pt" for s in seeds] if cfg.save else []))
    log = JsonlLog(out / "runs.jsonl" if out and world.is_main else None)
    env = environment(device)
    log.write({"type": "start", "config": asdict(cfg), "env": env, "world_size": world.size, "dataset": host.name,
               "train_images": host.train_x.shape[0], "test_images": host.test_x.shape[0],
               "image_size": host.train_x.shape[1], "channels": host.train_x.shape[3], "classes": host.num_classes})
    try:
        ds = upload(host, device)                                   # upload: untimed
        torch.manual_seed(cfg.seed)
        nets = build_nets(cfg, ds)          # reused by every run, re-initialised per seed
        # Every shape once before the first timed run, so seed 0 does not pay for compilation,
        # cuDNN autotuning or first-touch allocations that later seeds skip.
        warmup_s = warm_up(nets, cfg, ds)
        printer(f"warm-up{' with compile' if cfg.compile else ''}: {warmup_s:.1f} s (outside the timer)")
        table = Table(EPOCH_COLUMNS, printer)
        table.header()

        def report_epoch(i, seed, row):
            table.row({"run": i, **row})
            log.write({"type": "epoch", "seed": seed, **row})

        def report_run(result):
            log.write({"type": "run", **asdict(result)})
            if on_run:
                on_run(result)
        live = world.mode != "runs"      # runs spread over ranks are reported once a round is gathered
        results = []
        for chunk in world.rounds(seeds):
            mine = []
            for i, seed in chunk:
                on_epoch = (lambda row, i=i, seed=seed: report_epoch(i, seed, row)) if live else None
                try:
                    result = train(cfg.replace(seed=seed), ds, nets, on_epoch)
                except FastresError as e:
                    if live:
                        raise
                    # Spread over ranks, a run's error (a NaN loss) goes to every rank with the
                    # round's runs: all of them report the finished runs and stop alike.
                    mine.append((i, {"error": str(e)}))
                    continue
                if live:
                    results.append(result)
                    report_run(result)
                else:
                    mine.append((i, asdict(result)))
                if out and cfg.save and (world.is_main or not live):   # runs: the rank that trained it
                    save_weights(nets.net, out / f"weights-seed{seed}.pt")
            if live:
                continue
            gathered = world.gather(mine)                  # every rank, in seed order
            for r in gathered:
                if "error" not in r:
                    results.append(RunResult(**r))
                    for row in r["epochs"]:
                        report_epoch(seeds.index(r["seed"]), r["seed"], row)
                    report_run(results[-1])
            if errors := [r["error"] for r in gathered if "error" in r]:
                raise FastresError(errors[0])
    except BaseException as e:          # the log then says why it ends without a summary
        stop = user_error(e, cfg)
        log.write({"type": "stopped", "error": f"{type(stop).__name__}: {(str(stop).splitlines() or [''])[0]}"})
        if stop is e:
            raise
        raise stop from None
    summary = summarize([r.accuracy for r in results], [r.time_s for r in results], cfg.target)
    summary["warmup_s"] = warmup_s
    printer(format_summary(summary))
    log.write({"type": "summary", **summary})
    if out and cfg.plot and world.is_main:
        plot_accuracy_vs_time([asdict(r) for r in results], out / "accuracy_vs_time.png", title=cfg.dataset)
    world.barrier()          # ranks leave together (and tear the process group down together)
    return results, summary


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """Plain tensors only (no pickled objects), so torch.load(path, weights_only=True) reads it."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def subset(ds, train_n: int, test_n: int):
    """The first train_n / test_n images (0 = all): for tests and quick studies."""
    if train_n:
        ds.train_x, ds.train_y = ds.train_x[:train_n], ds.train_y[:train_n]
    if test_n:
        ds.test_x, ds.test_y = ds.test_x[:test_n], ds.test_y[:test_n]
    return ds
