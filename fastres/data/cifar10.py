"""CIFAR-10 from the official *binary* archive (never the pickled Python version: nothing is unpickled).

Each batch file is a run of 3073-byte records: 1 label byte, then 1024 R, 1024 G, 1024 B bytes
(32x32 planes, row-major). The official files hold 10000 records each; sizes are only required to
be whole records so that tests can use small synthetic batches with the official file names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import FastresError
from .cache import cache_dir, load_or_build, search_dirs
from .download import download_file, extract_folder, mirror_url
from .imageset import ImageSet, validate

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
RECORD_BYTES = 1 + 3 * 32 * 32
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 (n, 32, 32, 3), labels uint8 (n,))."""
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise FastresError(f"{path} is not a CIFAR-10 binary batch: {size} bytes is not a whole "
                           f"number of {RECORD_BYTES}-byte records (truncated?)")
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() > 9:
        raise FastresError(f"{path}: label {labels.max()} is out of range 0..9 (is this CIFAR-100?)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)   # planes -> (n, H, W, C)
    return images, labels


def parse_folder(folder: Path) -> ImageSet:
    missing = [f for f in TRAIN_FILES + [TEST_FILE] if not (folder / f).is_file()]
    if missing:
        raise FastresError(f"CIFAR-10 folder {folder} is missing {', '.join(missing)}")
    train = [read_batch(folder / f) for f in TRAIN_FILES]
    test_x, test_y = read_batch(folder / TEST_FILE)

    def tensors(images, labels):
        return (torch.from_numpy(np.ascontiguousarray(images)),
                torch.from_numpy(labels.astype(np.int64)))
    train_x, train_y = tensors(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
    test_x, test_y = tensors(test_x, test_y)
    return validate(ImageSet("cifar10", train_x, train_y, test_x, test_y, 10, list(CLASSES)), str(folder))


def find_folder(data_dir: str, download: bool) -> Path:
    """The extracted batches folder: found, extracted from a found archive, or downloaded."""
    dirs = search_dirs(data_dir)
    # An extracted folder anywhere beats extracting an archive again.
    for d in dirs:
        if (d / FOLDER).is_dir():
            return d / FOLDER
        if (d / TRAIN_FILES[0]).is_file():      # --data-dir pointing at the batches folder itself
            return d
    for d in dirs:
        if (d / ARCHIVE).is_file():
            return extract_folder(d / ARCHIVE, FOLDER, cache_dir())
    where = (f"put {ARCHIVE} or its extracted {FOLDER}/ folder in "
             f"{' or '.join(str(d) for d in dirs)} (or pass --data-dir DIR)")
    if not download:
        raise FastresError(f"CIFAR-10 not found and download is disabled: {where}")
    try:
        archive = download_file(mirror_url(URL), cache_dir() / ARCHIVE, MD5)
    except FastresError as e:
        raise FastresError(f"{e}; or {where}") from e
    return extract_folder(archive, FOLDER, cache_dir())


def load(data_dir: str = "", download: bool = True) -> ImageSet:
    folder = find_folder(data_dir, download)
    sources = [folder / f for f in TRAIN_FILES + [TEST_FILE]]
    if not all(p.is_file() for p in sources):
        return parse_folder(folder)     # raises, naming the missing files
    return load_or_build("cifar10", sources, lambda: parse_folder(folder))
