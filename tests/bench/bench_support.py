"""Shared pieces of the benchmark suite: the device, per-device sizes, synthetic data, and one
timing helper that every benchmark goes through.

Sizes: on a GPU the recipe sizes (CIFAR-10 shapes, recipe batch sizes, fp16); on the CPU small
widths and batches (fp32) so the whole suite stays short on 2 cores. The sizes are recorded in
each benchmark's extra_info, so a saved JSON says what was measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from fastres.config import RECIPES, Config
from fastres.data import ImageSet
from fastres.train import training_dtype

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = training_dtype(DEVICE)                       # fp16 on CUDA, fp32 on CPU

# For benchmarks that only mean something on a GPU, together with @pytest.mark.gpu (declared in
# tests/conftest.py; `pytest -m gpu` selects them).
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@dataclass(frozen=True)
class Sizes:
    train_images: int         # synthetic training set (augmentation, loader)
    image_size: int
    channels: int
    loader_batch: int
    width: float | None       # channel multiplier of every model (None: the recipe's)
    batch: int | None         # training batch of every model (None: the recipe's)
    test_images: int          # TTA evaluation
    eval_batch: int
    rounds: int               # timed rounds of a typical benchmark
    warmup: int               # untimed rounds before them (caches, cuDNN autotuning, Triton JIT)


# GPU: CIFAR-10 shapes, the recipes' widths and batch sizes.
GPU_SIZES = Sizes(train_images=50_000, image_size=32, channels=3, loader_batch=512, width=None, batch=None,
                  test_images=10_000, eval_batch=1000, rounds=20, warmup=3)
# CPU: the same code paths at sizes where one call takes milliseconds to ~0.1 s.
CPU_SIZES = Sizes(train_images=4096, image_size=32, channels=3, loader_batch=256, width=0.25, batch=32,
                  test_images=250, eval_batch=250, rounds=20, warmup=2)
SIZES = GPU_SIZES if CUDA else CPU_SIZES

ARCHS = ("resnet9", "airbench", "resnet18")


def model_config(arch: str) -> Config:
    """The first registered CIFAR-10 recipe with this arch (resnet9: cifar10-myrtle, airbench:
    cifar10-94), eager, at this device's width and batch. ResNet-18 has no recipe: D2L's ReLU
    net at batch 512."""
    recipes = [r.config for r in RECIPES.values() if r.config.dataset == "cifar10" and r.config.arch == arch]
    cfg = recipes[0] if recipes else Config(arch=arch, act="relu", whiten=False, batch_size=512)
    # cifar10-myrtle's prep conv has been 1x1 since 2026-12-04 (Myrtle's final net); the benchmark
    # keeps the 3x3 one it timed before, so its figures stay comparable with the stored baselines.
    cfg = cfg.replace(compile=False, prep_kernel=3)
    if SIZES.width is not None:
        cfg = cfg.replace(width=SIZES.width)
    return cfg.replace(batch_size=SIZES.batch) if SIZES.batch is not None else cfg


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def measure(benchmark, fn, setup=None, rounds: int | None = None, warmup: int | None = None,
            iterations: int = 1, **info):
    """Time fn (with the args setup returns, setup untimed) via benchmark.pedantic.

    The device is synchronised inside the timed call (GPU work is asynchronous) and at the end
    of setup (so setup's kernels are not billed to fn). iterations > 1 (no setup) times that
    many calls per round and reports the time per call: sub-millisecond functions need it for
    a stable median. In smoke mode (the default, see conftest.py) pedantic runs fn once,
    without warm-up. `info` goes into extra_info."""
    benchmark.extra_info.update(device=str(DEVICE), dtype=str(DTYPE).removeprefix("torch."), **info)

    def timed(*args):
        out = fn(*args)
        sync()
        return out

    def prepared():
        args = setup()
        sync()
        return args, {}

    return benchmark.pedantic(timed, setup=prepared if setup else None,
                              rounds=SIZES.rounds if rounds is None else rounds,
                              warmup_rounds=SIZES.warmup if warmup is None else warmup, iterations=iterations)


def synthetic_images(n: int, seed: int = 0) -> torch.Tensor:
    """Normalised-looking images (N, C, H, W) in the training dtype, channels-last, on DEVICE."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, SIZES.channels, SIZES.image_size, SIZES.image_size), generator=g)
    return x.to(DEVICE, DTYPE).contiguous(memory_format=torch.channels_last)


def synthetic_labels(n: int, classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def synthetic_imageset(n_train: int, n_test: int, size: int, channels: int, classes: int = 10) -> ImageSet:
    """A uint8 ImageSet already on DEVICE, shaped like the real dataset (content is noise: the
    benchmarks measure speed, not accuracy)."""
    g = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n, size, size, channels), generator=g, dtype=torch.uint8).to(DEVICE)

    def labels(n):
        return torch.randint(0, classes, (n,), generator=g).to(DEVICE)

    return ImageSet("synthetic", images(n_train), labels(n_train), images(n_test), labels(n_test), classes)
