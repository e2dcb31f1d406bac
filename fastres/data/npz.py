"""Any image set from a .npz file with uint8 `train_x`, `test_x` ([N,H,W] or [N,H,W,C]) and
integer `train_y`, `test_y`. Loaded with allow_pickle=False: an .npz holding object arrays is
rejected rather than unpickled. num_classes is the largest label + 1 over train and test.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import FastresError
from .cache import load_or_build
from .imageset import MAX_CLASSES, ImageSet, validate

KEYS = ("train_x", "train_y", "test_x", "test_y")


def parse_npz(path: Path) -> ImageSet:
    # np.load takes any other content for a .npy array (an ndarray, not an archive) or a pickle
    # (refused with a message about pickled data): say what the file is not instead.
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            raise FastresError(f"cannot read {path}: not a .npz archive (a zip of .npy arrays, "
                               f"as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise FastresError(f"{path} is missing {', '.join(missing)} (needs {', '.join(KEYS)})")
            arrays = {k: npz[k] for k in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:   # MemoryError: a huge header
        raise FastresError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray):           # a member that is not a .npy array comes back as bytes
            raise FastresError(f"{path}: {key} is not a .npy array")
        if key.endswith("_x") and a.dtype != np.uint8:
            raise FastresError(f"{path}: {key} must be uint8 images (0..255), got {a.dtype}")
        if key.endswith("_y") and a.dtype.kind not in "iu":    # (numpy counts timedelta64 as integer)
            raise FastresError(f"{path}: {key} must hold integer labels, got {a.dtype}")
    # Python ints: concatenating uint64 with int64 labels would give floats
    top = max((int(arrays[k].max()) for k in ("train_y", "test_y") if arrays[k].size), default=-1)
    if top >= MAX_CLASSES:
        raise FastresError(f"{path}: label {top} is out of range (at most {MAX_CLASSES} classes)")
    num_classes = top + 1
    tensors = {}
    for key, a in arrays.items():
        if key.endswith("_x") and a.ndim == 3:
            a = a[..., None]                        # (N, H, W) -> one channel
        tensors[key] = torch.from_numpy(np.ascontiguousarray(a) if key.endswith("_x") else a.astype(np.int64))
    return validate(ImageSet(path.stem, **tensors, num_classes=num_classes), str(path))


def load(path: str) -> ImageSet:
    p = Path(path)
    if not p.is_file():
        raise FastresError(f"dataset file {path} not found")
    return load_or_build(f"npz-{p.stem}", [p], lambda: parse_npz(p))
