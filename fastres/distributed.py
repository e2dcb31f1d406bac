"""Several GPUs (or CPU processes): torchrun + torch.distributed, one process per device.

    torchrun --standalone --nproc_per_node=8 -m fastres --recipe cifar10-94 --parallel data
    torchrun --standalone --nproc_per_node=8 -m fastres --target 0.94 --runs 25      # runs split
    torchrun --standalone --nproc_per_node=2 -m fastres --device cpu --dataset my.npz --runs 4

Across nodes, start the same command on every node with torchrun's rendezvous options
(nothing here is fastres-specific; the process group reads RANK/WORLD_SIZE/MASTER_* from torchrun):

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST0:29500 \\
        --rdzv_id=run42 -m fastres --recipe cifar10-94 --parallel data

fastres sees torchrun through RANK / LOCAL_RANK / WORLD_SIZE. Each process takes the device
cuda:LOCAL_RANK (with --device auto or cuda; --device cpu gives CPU processes) and joins a process
group over NCCL on GPUs, gloo on CPU (--dist-backend auto | nccl | gloo). What the processes do
is --parallel:

- data  (default when --runs is 1) one training run over all ranks, DAWNBench style.
  --batch-size is the GLOBAL batch: each step every rank trains on its own slice of
  batch_size / world_size images (batch_size must be a multiple of the world size), so a recipe
  keeps its meaning - the same LR, schedule and images per step - on any number of GPUs. Every
  rank draws the epoch's shuffle and augmentation randoms in bulk from the same seed and
  augments only its slice of every global batch: the epoch is covered once, no image twice.
  Gradients are summed over ranks (one all-reduce per dtype after backward; the loss is summed,
  train.py), which is exactly the gradient of the global batch. BatchNorm statistics are PER
  RANK (the fused kernel on each rank's slice, like ghost batch norm with ghost_batch =
  batch_size / world_size; a --ghost-batch splits each rank's slice further); running statistics stay per rank and the reported accuracy is rank
  0's. Every rank evaluates (same weights, so no rank waits); rank 0 alone prints, logs and saves.
  Time-to-accuracy: the ranks meet at a barrier before the clock starts, and the reported time
  is the maximum over the ranks of their timers (the run is done when the slowest rank is).
- runs  (default when there are several runs: --runs > 1, or a study row with several seeds)
  independent runs spread over the ranks: the k-th seed goes to rank k mod world_size, each rank
  trains its seeds on its device, and after each round of world_size runs the plain result dicts
  are gathered (all_gather_object) so rank 0 prints the table and JSONL log exactly as a single
  process training the same seeds would (times aside), round by round. A run's error (a NaN
  loss) travels with its round's results, and every rank stops after reporting the round's
  finished runs. Weights (--save) are written by the rank that trained them.
- none  ignore torchrun: every process runs the whole job on its own.

Errors (one line per process, exit 2, before any rendezvous): --batch-size smaller than the
world size or not a multiple of it under --parallel data; --dist-backend nccl without CUDA.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import FastresError


def launched() -> bool:
    """True in a process started by torchrun (or anything that sets the same variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; World() is a plain single process."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mode: str = "none"              # data | runs | none (resolved)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def main_only(self, printer):
        """printer on rank 0, a no-op elsewhere."""
        return printer if self.is_main else (lambda *args, **kwargs: None)

    def rounds(self, items: list) -> list[list[tuple[int, object]]]:
        """The (index, item) pairs this rank handles, round by round: under 'runs' round r gives
        item r*size + rank to this rank (none where the last round is short), so that the ranks
        can gather each round's results as soon as it ends; otherwise every item, one a round."""
        indexed = list(enumerate(items))
        if self.mode != "runs":
            return [[pair] for pair in indexed]
        return [indexed[start:start + self.size][self.rank:self.rank + 1]
                for start in range(0, len(indexed), self.size)]

    def gather(self, mine: list[tuple[int, object]]) -> list:
        """Every rank's (index, picklable item) pairs -> all items in index order, on every rank
        (every rank gets them so that all keep taking the same decisions afterwards)."""
        if self.mode != "runs" or self.size == 1:
            return [item for _, item in sorted(mine, key=lambda pair: pair[0])]
        parts = [None] * self.size
        dist.all_gather_object(parts, mine)
        return [item for _, item in sorted((pair for part in parts for pair in part), key=lambda p: p[0])]

    def barrier(self):
        if self.size > 1:
            barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Local rank 0 goes first (e.g. downloads and builds the dataset cache), the others
        follow once it is done, so they read the cache instead of racing to write it."""
        if self.size > 1 and self.local_rank != 0:
            barrier()
        yield
        if self.size > 1 and self.local_rank == 0:
            barrier()


def resolve_mode(parallel: str, jobs: int) -> str:
    """--parallel auto: independent runs when there are several jobs, else one data-parallel run."""
    if parallel == "auto":
        return "runs" if jobs > 1 else "data"
    return parallel


def resolve_device(name: str) -> torch.device:
    """--device auto | cpu | cuda | cuda:N as a torch.device, or one clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FastresError(f"--device {name} requested but CUDA is not available (use --device cpu)")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):     # meta, mps, ...: not supported
        raise FastresError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def rank_device(name: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK for --device auto/cuda when CUDA is there; otherwise as resolve_device."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise FastresError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible "
                               f"(use --nproc_per_node <= the number of GPUs)")
        return torch.device("cuda", local_rank)
    return resolve_device(name)


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "nccl" and (not torch.cuda.is_available() or device.type != "cuda"):
        raise FastresError("--dist-backend nccl needs CUDA GPUs, but this process runs on "
                           f"{device.type} (use --dist-backend gloo, or auto)")
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return name


def check_data_batch(batch_size: int, world_size: int) -> int:
    """The per-rank slice of a global batch; FastresError when the batch cannot be split evenly."""
    if world_size > batch_size:
        raise FastresError(f"world size {world_size} is larger than --batch-size {batch_size} (the global batch): "
                           f"every rank needs at least one image of each batch")
    if batch_size % world_size:
        raise FastresError(f"--batch-size {batch_size} (global) must be a multiple of the world size "
                           f"{world_size} under --parallel data")
    return batch_size // world_size


def setup(cfg, jobs: int | None = None) -> tuple[World, torch.device | None]:
    """Join the process group when started by torchrun (idempotent): returns this rank's World
    and device, or (World(), None) for a plain single process. jobs: how many independent runs
    the caller has (default cfg.runs), which --parallel auto uses to pick data or runs."""
    if not launched() or cfg.parallel == "none" or env_int("WORLD_SIZE", 1) == 1:
        return World(), None
    rank, size, local_rank = env_int("RANK", 0), env_int("WORLD_SIZE", 1), env_int("LOCAL_RANK", 0)
    mode = resolve_mode(cfg.parallel, cfg.runs if jobs is None else jobs)
    device = rank_device(cfg.device, local_rank)
    backend = resolve_backend(cfg.dist_backend, device)
    if mode == "data":
        check_data_batch(cfg.batch_size, size)
    if not dist.is_available():
        raise FastresError("this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        atexit.register(cleanup)
    return World(rank, size, local_rank, mode), device


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave(exit_code: int) -> int:
    """End a torchrun worker that joined a process group: destroy the group, flush, and exit
    at once. Skipping interpreter finalisation is deliberate: with gloo, about one exit in ten
    aborted there ('terminate called without an active exception', after the group was
    destroyed), which torchrun reports as a failed run. Without a process group: returns."""
    if not (dist.is_available() and dist.is_initialized()):
        return exit_code
    cleanup()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def is_main_process(cfg) -> bool:
    """Whether this process should print (usable before setup(): reads torchrun's RANK)."""
    return not launched() or cfg.parallel == "none" or env_int("RANK", 0) == 0


# --- data-parallel helpers used by train.py ----------------------------------------------

def data_shard(cfg) -> tuple[int, int]:
    """(rank, world size) of the current data-parallel run; (0, 1) when training alone."""
    if cfg.parallel != "data" or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard_order(perm: torch.Tensor, steps: int, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """The images `rank` trains on in one epoch, in step order: its slice of every global batch.

    perm (N,) is the epoch's shuffle (identical on every rank); global batch s is
    perm[s*B:(s+1)*B] and rank r takes its r-th B/W block, so the ranks together cover each
    global batch exactly once."""
    per_rank = batch_size // world_size
    return perm[:steps * batch_size].view(steps, world_size, per_rank)[:, rank].reshape(-1)   # (steps*B/W,)


def all_reduce_grads(params) -> None:
    """Sum every gradient over the ranks: one flat buffer per dtype (fp16 convs, fp32 BN), so
    there are a couple of large messages per step rather than one per parameter."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, chunk in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(chunk.view(g.shape))


def sum_over_ranks_(*tensors: torch.Tensor) -> None:
    for t in tensors:
        dist.all_reduce(t)


def max_over_ranks(value: float) -> float:
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def barrier() -> None:
    """Every rank waits for all the others (and for its own GPU work)."""
    dist.barrier()
    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        torch.cuda.synchronize()
