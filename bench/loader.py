"""Images/s of fastres's batched on-device augmentation vs a conventional per-sample DataLoader.

    python bench/loader.py                               # CPU fp32 (or CUDA fp16 when present)
    python bench/loader.py --json /tmp/loader.json

Both sides apply the same augmentation to synthetic CIFAR-sized data (N x 3 x 32 x 32,
normalised): 4 px reflect-padded translate, random horizontal flip, 8 x 8 cutout, and both
deliver shuffled batches of 512 (drop_last). Batched = EpochAugmenter over the whole set once
per epoch + epoch_batches indexing (fastres/augment.py); "shuffle fused" passes the epoch's
permutation to the augmenter (order=perm) so batches are slices. DataLoader = a Dataset doing the same
per image in plain torch ops, with 0 and 2 worker processes; on CUDA its batches are also
copied to the GPU (pinned), as a conventional pipeline must. One untimed warm-up epoch each
(worker start-up and caches excluded), then the median of --epochs timed epochs.
"""
from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import time

# This checkout's fastres and kernels/, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fastres.augment import EpochAugmenter, epoch_batches  # noqa: E402
from fastres.errors import Parser  # noqa: E402
from fastres.report import atomic_write, output_problem  # noqa: E402

PAD, CUTOUT = 4, 8


class PerSampleAugmented(Dataset):
    """The conventional pipeline: one image at a time, global RNG, as torchvision transforms do."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y                               # (N, C, H, W) fp32 on the CPU

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = F.pad(self.x[i][None], (PAD, PAD, PAD, PAD), mode="reflect")[0]
        _, h, w = self.x.shape[1:]
        oy, ox = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
        img = img[:, oy: oy + h, ox: ox + w]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        img = img.clone()
        cy, cx = torch.randint(0, h, (1,)).item(), torch.randint(0, w, (1,)).item()
        img[:, max(cy - CUTOUT // 2, 0): cy - CUTOUT // 2 + CUTOUT, max(cx - CUTOUT // 2, 0): cx - CUTOUT // 2 + CUTOUT] = 0
        return img, self.y[i]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_epoch_s(epoch, epochs, device):
    """Median seconds per epoch after one untimed warm-up: robust to other jobs on shared cores."""
    epoch(0)
    times = []
    for e in range(1, epochs + 1):
        sync(device)
        t0 = time.perf_counter()
        epoch(e)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_batched(x, y, epochs, batch_size, device, fused=False):
    g = torch.Generator(device=device).manual_seed(0)
    aug = EpochAugmenter(len(x), crop_pad=PAD, flip="random", cutout=CUTOUT, generator=g)
    n = len(x)

    def epoch(e):
        if not fused:                       # the plain interface: augment, then index batches
            xa = aug(x, e)
            for idx in epoch_batches(n, batch_size, g):
                xb, yb = xa[idx], y[idx]
        else:                               # shuffle fused into the augmentation gather
            perm = torch.randperm(n, generator=g, device=g.device)
            xa = aug(x, e, order=perm)
            for i in range(0, n - n % batch_size, batch_size):
                xb, yb = xa[i: i + batch_size], y[perm[i: i + batch_size]]
        return xb, yb
    return median_epoch_s(epoch, epochs, device)


def time_dataloader(x, y, epochs, batch_size, workers, device):
    ds = PerSampleAugmented(x, y)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")

    def epoch():
        for xb, yb in loader:
            xb = xb.to(device, torch.float16 if device.type == "cuda" else xb.dtype, non_blocking=True)
            xb = xb.contiguous(memory_format=torch.channels_last)
            yb = yb.to(device, non_blocking=True)
    return median_epoch_s(lambda e: epoch(), epochs, device)


def main(argv=None):
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="synthetic training images")
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per method (median reported)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--json", default="", help="write results here (atomically)")
    args = ap.parse_args(argv)
    if args.json and (problem := output_problem(args.json)):
        ap.error(f"--json {problem}")
    if args.batch_size < 1 or args.n < args.batch_size or args.epochs < 1 or min(args.workers) < 0:
        ap.error(f"need --batch-size >= 1, --n >= --batch-size, --epochs >= 1 and --workers >= 0; got "
                 f"--batch-size {args.batch_size}, --n {args.n}, --epochs {args.epochs}, --workers {args.workers}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    g = torch.Generator().manual_seed(0)
    x_cpu = torch.randn((args.n, 3, 32, 32), generator=g)
    y_cpu = torch.randint(0, 10, (args.n,), generator=g)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    x = x_cpu.to(device, dtype).contiguous(memory_format=torch.channels_last)
    y = y_cpu.to(device)
    per_epoch = (args.n // args.batch_size) * args.batch_size          # images delivered per epoch

    rows = [("batched on-device (fastres)", "-", time_batched(x, y, args.epochs, args.batch_size, device)),
            ("batched, shuffle fused", "-", time_batched(x, y, args.epochs, args.batch_size, device, fused=True))]
    for w in args.workers:
        rows.append(("DataLoader per-sample", str(w), time_dataloader(x_cpu, y_cpu, args.epochs, args.batch_size, w, device)))
    rate = {f"{name}|{w}": per_epoch / s for name, w, s in rows}

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}  dtype {str(dtype)[6:]}  torch {torch.__version__}  threads {torch.get_num_threads()}"
          f"  N {args.n}  batch {args.batch_size}  median of {args.epochs} epochs")
    print(f"{'method':<30}{'workers':>8}{'images/s':>14}{'ms/epoch':>11}")
    for (method, w, s), r in zip(rows, rate.values()):
        print(f"{method:<30}{w:>8}{r:>14,.0f}{1e3 * s:>11.1f}")
    batched, fused = list(rate.values())[:2]
    loaders = {w: r for (m, w, _), r in zip(rows[2:], list(rate.values())[2:])}
    ratios = {w: batched / r for w, r in loaders.items()}
    for w, q in ratios.items():
        print(f"ratio batched / DataLoader({w} workers): {q:.1f}x   (shuffle fused: {fused / loaders[w]:.1f}x)")

    if args.json:
        result = {
            "bench": "loader", "device": name, "dtype": str(dtype), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "n": args.n, "batch_size": args.batch_size, "epochs": args.epochs,
            "augment": {"crop_pad": PAD, "flip": "random", "cutout": CUTOUT},
            "images_per_s": {"batched": batched, "batched_shuffle_fused": fused, **{f"dataloader_{w}_workers": r for w, r in loaders.items()}},
            "ratio": {f"vs_{w}_workers": q for w, q in ratios.items()},
            "ratio_fused": {f"vs_{w}_workers": fused / r for w, r in loaders.items()},
            "ratio_vs_best_dataloader": batched / max(loaders.values()) if loaders else None,
        }
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))


if __name__ == "__main__":
    main()
