"""ImageSet: a dataset as plain uint8 images and int64 labels, and the one check all loaders share.

Every loader (CIFAR-10, Fashion-MNIST, .npz) and the parsed-data cache produce an ImageSet and run
`validate` on it, so train.py can rely on the shapes and dtypes below whatever the source.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FastresError

MAX_CLASSES = 10_000    # a larger label is far more likely a wrong array than a real class count


@dataclass
class ImageSet:                 # host or device, uint8 images
    name: str                   # "cifar10", "fashion-mnist", or the npz file stem
    train_x: torch.Tensor       # uint8 (N, H, W, C), C in {1, 3}
    train_y: torch.Tensor       # int64 (N,)
    test_x: torch.Tensor        # uint8 (M, H, W, C)
    test_y: torch.Tensor        # int64 (M,)
    num_classes: int
    classes: list[str] | None = None


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def validate(ds: ImageSet, source: str) -> ImageSet:
    """Raise FastresError naming `source` and the first thing wrong with `ds`; return it if fine."""
    def bad(msg):
        raise FastresError(f"{source}: {msg}")

    if type(ds.num_classes) is not int or not 1 <= ds.num_classes <= MAX_CLASSES:
        bad(f"num_classes must be an integer in 1..{MAX_CLASSES}, got {ds.num_classes!r}")
    if ds.classes is not None and (not isinstance(ds.classes, list)
                                   or not all(isinstance(c, str) for c in ds.classes)):
        bad("class names must be a list of strings")
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            bad(f"{split}_x and {split}_y must be arrays")
        if x.dtype != torch.uint8:
            bad(f"{split}_x must be uint8 images, got {_dtype_name(x)}")
        if x.ndim != 4 or x.shape[3] not in (1, 3):
            bad(f"{split}_x must have shape (N, H, W) or (N, H, W, C) with C in {{1, 3}}, got {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.ndim != 1:
            bad(f"{split}_y must be a 1-D array of integer labels, got {_dtype_name(y)} {tuple(y.shape)}")
        if len(x) == 0 or x[0].numel() == 0:
            bad(f"no images in {split}_x (shape {tuple(x.shape)})")
        if len(x) != len(y):
            bad(f"{split}_x has {len(x)} images but {split}_y has {len(y)} labels")
        low, high = int(y.min()), int(y.max())
        if low < 0:
            bad(f"{split}_y has negative label {low}")
        if high >= ds.num_classes:
            bad(f"{split}_y has label {high}, out of range 0..{ds.num_classes - 1}")
    if ds.train_x.shape[1:] != ds.test_x.shape[1:]:
        bad(f"train and test images differ in shape: {tuple(ds.train_x.shape[1:])} vs {tuple(ds.test_x.shape[1:])}")
    if ds.classes is not None and len(ds.classes) != ds.num_classes:
        bad(f"{len(ds.classes)} class names for {ds.num_classes} classes")
    return ds
