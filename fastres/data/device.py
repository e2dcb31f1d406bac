"""uint8 images on the device -> normalised, channels-last float tensors for training.

`upload` runs once, outside the training timer. `prepare` runs inside it, so it is a handful of
tensor ops on the device: no host round trips except the tiny index tensor of the validation split.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import FastresError
from .imageset import ImageSet

# The held-out validation images come from a permutation with a fixed seed, independent of the
# run's seed, so every run and seed validates on the same images and the test set stays untouched.
VAL_SPLIT_SEED = 20261127
MIN_STD = 1.0   # in 0..255 units: a (near-)constant channel is centred but not blown up


@dataclass
class DeviceData:
    train_x: torch.Tensor       # (N, C, H, W) channels_last, dtype, normalised
    train_y: torch.Tensor       # int64 (N,)
    val_x: torch.Tensor | None  # (K, C, H, W) or None when val_split == 0
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor          # (C,) float32, per-channel mean of the training portion in [0, 1] units
    std: torch.Tensor           # (C,) float32, same units
    num_classes: int


def upload(ds: ImageSet, device: torch.device | str) -> ImageSet:
    """The same uint8 ImageSet with its tensors on `device` (a no-op copy-free for the same device)."""
    device = torch.device(device)
    return dataclasses.replace(ds, **{k: getattr(ds, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")})


def validation_mask(n: int, k: int) -> torch.Tensor:
    """bool (n,): True for the k training images held out for validation (same for every call)."""
    held_out = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))[:k]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[held_out] = True
    return mask


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (population) of uint8 (N, H, W, C) images, in 0..255 units.

    From a 256-bin histogram per channel: exact, no float copy of the images, and several times
    faster on CPU than a float reduction over the strided channel axis (bincount without weights
    is also allowed under torch's deterministic mode)."""
    counts = torch.stack([torch.bincount(images[..., c].reshape(-1), minlength=256)
                          for c in range(images.shape[-1])]).double()          # (C, 256)
    levels = torch.arange(256, dtype=torch.float64, device=images.device)
    n = counts.sum(1)
    mean = counts @ levels / n
    var = counts @ levels.square() / n - mean.square()
    return mean.float(), var.clamp_min(0).sqrt().float()


def _as_float_nchw(images: torch.Tensor) -> torch.Tensor:
    # (N, H, W, C) uint8 permuted is already (N, C, H, W) with channels-last strides; .float()
    # preserves them, so no layout copy is ever made.
    return images.permute(0, 3, 1, 2).float()


def prepare(ds: ImageSet, dtype: torch.dtype, val_split: int = 0) -> DeviceData:
    """Normalise with the training portion's per-channel mean/std and convert to `dtype`, channels-last."""
    n = len(ds.train_x)
    if not 0 <= val_split < n:
        raise FastresError(f"--val-split {val_split} must be in 0..{n - 1} (the training set has {n} images)")
    train_x, train_y, val_x, val_y = ds.train_x, ds.train_y, None, None
    if val_split:
        # Boolean masks keep both parts in their original order.
        is_val = validation_mask(n, val_split).to(train_x.device)
        train_x, train_y, val_x, val_y = train_x[~is_val], train_y[~is_val], train_x[is_val], train_y[is_val]

    mean, std = channel_stats(train_x)                  # (C,), 0..255 units
    std = std.clamp_min(MIN_STD)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
        return x.to(dtype).contiguous(memory_format=torch.channels_last)

    return DeviceData(
        train_x=normalise(_as_float_nchw(train_x)), train_y=train_y,
        val_x=normalise(_as_float_nchw(val_x)) if val_x is not None else None, val_y=val_y,
        test_x=normalise(_as_float_nchw(ds.test_x)), test_y=ds.test_y,
        mean=mean / 255, std=std / 255, num_classes=ds.num_classes)
