"""What fraction of the fused BN op's second-pass reads an LRU cache could serve: the model
behind the `reverse` knob's prediction (bn_act_kernels.py, "L2 reuse"). A model, not a measurement.

    python bench/l2_model.py                   # cifar10-94's and the speedrun's BN layers, L2 of 40 and 50 MB
    python bench/l2_model.py --l2 50 --mb 28   # one case

Each pass streams its tensors row by row in one order (a GPU starts programs in grid order):
  forward:  statistics read x; apply reads x, writes y;
  backward: the sums read x and dy; dx reads x and dy, writes dx.
The cache holds `l2` MB of lines, all of them stale data at the start, and evicts the least
recently used line. Printed: the share of apply's and dx's reads that hit, with the second pass
in grid order and reversed. For x, dy of B MB each and an L MB cache, reversed dx hits
min(1, L / 3B) of its reads once 2B > L; in grid order, next to none.
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

# This checkout's fastres, never an installed copy from another checkout:
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastres.errors import Parser  # noqa: E402

LINES_PER_MB = 16          # the model's granularity: a line stands for 64 KB of rows
MAX_MB = 4096              # 65536 lines: far beyond any GPU's L2 or BN layer, seconds to model


def second_pass_hits(l2_mb: float, tensor_mb: float, backward: bool, reverse: bool) -> float:
    """Share of the second pass's reads (apply: x; dx: x and dy) found in the cache."""
    capacity, rows = round(l2_mb * LINES_PER_MB), round(tensor_mb * LINES_PER_MB)
    cache = OrderedDict((("stale", i), None) for i in range(capacity))

    def touch(key) -> bool:
        if key in cache:
            cache.move_to_end(key)
            return True
        cache[key] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
        return False

    reads = ("x", "dy") if backward else ("x",)
    for i in range(rows):                                   # first pass: grid order
        for name in reads:
            touch((name, i))
    hits = 0
    for i in (reversed(range(rows)) if reverse else range(rows)):
        hits += sum(touch((name, i)) for name in reads)
        touch(("dx" if backward else "y", i))                # the pass's write allocates a line
    return hits / (rows * len(reads))


# cifar10-94's and cifar10-94-speedrun's BN layers (fp16, bench/kernels.py's shapes): MB per tensor
LAYERS = {"cifar10-94 64@15": 28.1, "cifar10-94 256@7": 24.5, "cifar10-94 256@3": 4.5,
          "speedrun 64@15": 42.2, "speedrun 256@7": 36.8}


def main(argv=None) -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--l2", type=float, nargs="+", default=[50.0, 40.0], help="cache sizes in MB")
    p.add_argument("--mb", type=float, help="one tensor size in MB instead of the recipes' layers")
    args = p.parse_args(argv)
    sizes = args.l2 + ([args.mb] if args.mb is not None else [])
    if min(sizes) <= 0:
        p.error(f"--l2 and --mb must be positive sizes in MB, got --l2 {args.l2} --mb {args.mb}")
    if not 1 / LINES_PER_MB <= min(sizes) <= max(sizes) <= MAX_MB:     # one line .. a model that fits in memory
        p.error(f"--l2 and --mb must be {1 / LINES_PER_MB:g} to {MAX_MB} MB (the model's lines are "
                f"{1024 // LINES_PER_MB} KB), got --l2 {args.l2} --mb {args.mb}")
    layers = {f"{args.mb} MB": args.mb} if args.mb else LAYERS
    print("L2 MB  layer                 tensor MB  apply hits: grid  reversed   dx hits: grid  reversed")
    for l2 in args.l2:
        for name, mb in layers.items():
            f = [second_pass_hits(l2, mb, b, r) for b in (False, True) for r in (False, True)]
            print(f"{l2:5.0f}  {name:<20}  {mb:9.1f}  {f[0]:16.2f}  {f[1]:8.2f}  {f[2]:13.2f}  {f[3]:8.2f}")


if __name__ == "__main__":
    main()
