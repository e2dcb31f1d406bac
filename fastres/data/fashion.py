"""Fashion-MNIST from the four official idx files (gzipped or not).

Local files are validated by format (magic number, dimensions, size, label range), not by checksum:
Debian's dataset-fashion-mnist package re-compressed the same bytes, so its .gz files have other
MD5s than the official ones. Downloads are checked against the official MD5s.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import FastresError
from .cache import DEFAULT_CACHE, cache_dir, load_or_build, search_dirs
from .download import download_file, mirror_url
from .imageset import ImageSet, validate

BASE_URL = "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FOLDER = "fashion-mnist"
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]     # Debian's dataset-fashion-mnist
FILES = {   # ImageSet field -> idx file stem
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MD5 = {     # of the official .gz files
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049     # idx: unsigned bytes, 3 dims / 1 dim
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path: Path, images: bool) -> np.ndarray:
    """An idx file -> uint8 images (n, 28, 28) or labels (n,), checked against the format."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise FastresError(f"cannot read {path}: corrupt or truncated file ({e})") from e
    magic = IMAGES_MAGIC if images else LABELS_MAGIC
    header = 16 if images else 8
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise FastresError(f"{path} is not an idx {'image' if images else 'label'} file "
                           f"(expected magic number {magic})")
    shape = struct.unpack(">3I" if images else ">I", data[4:header])
    if images and shape[1:] != (28, 28):
        raise FastresError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    if len(data) != header + int(np.prod(shape)):
        raise FastresError(f"{path}: {len(data)} bytes, expected {header + int(np.prod(shape))} "
                           f"for shape {shape} (truncated?)")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    if not images and array.size and array.max() > 9:
        raise FastresError(f"{path}: label {array.max()} is out of range 0..9")
    return array


def parse_files(paths: dict[str, Path]) -> ImageSet:
    arrays = {key: read_idx(path, images=key.endswith("_x")) for key, path in paths.items()}
    for split in ("train", "test"):
        n_x, n_y = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if n_x != n_y:
            raise FastresError(f"Fashion-MNIST {split} files disagree: {n_x} images but {n_y} labels "
                               f"({paths[f'{split}_x'].parent})")
    tensors = {key: torch.from_numpy(a[..., None].copy() if key.endswith("_x") else a.astype(np.int64))
               for key, a in arrays.items()}
    return validate(ImageSet("fashion-mnist", **tensors, num_classes=10, classes=list(CLASSES)),
                    str(paths["train_x"].parent))


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four files in `folder` (each as .gz or uncompressed), or None unless all are there."""
    found = {}
    for key, stem in FILES.items():
        found[key] = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)
    return found if all(found.values()) else None


def _partial_set(folder: Path) -> str:
    """Which of the four files `folder` lacks, if it holds some of them but not all ("" otherwise)."""
    has = {stem: any((folder / name).is_file() for name in (f"{stem}.gz", stem)) for stem in FILES.values()}
    if not any(has.values()) or all(has.values()):
        return ""
    return ", ".join(f"{stem}.gz" for stem, there in has.items() if not there)


def find_files(data_dir: str, download: bool) -> dict[str, Path]:
    dirs = search_dirs(data_dir)
    # A folder the user named that holds only some of the files is a mistake to report, not a
    # reason to fall back silently to another copy. (A partial set in a cache dir is a download
    # that stopped part-way, which the download below completes.)
    caches = {cache_dir().resolve(), DEFAULT_CACHE.resolve()}
    for d in (d for d in dirs if d.resolve() not in caches):    # --data-dir, $FASTRES_DATA
        for folder in (d, d / FOLDER):
            if missing := _partial_set(folder):
                raise FastresError(f"{folder} holds only some of the Fashion-MNIST files: {missing} missing")
    for d in dirs + SYSTEM_DIRS:
        for folder in (d, d / FOLDER):
            if found := _files_in(folder):
                return found
    names = ", ".join(f"{stem}.gz" for stem in FILES.values())
    where = f"put {names} in {' or '.join(str(d / FOLDER) for d in dirs)} (or pass --data-dir DIR)"
    if not download:
        raise FastresError(f"Fashion-MNIST not found and download is disabled: {where}")
    target = cache_dir() / FOLDER
    try:
        for stem in FILES.values():
            if not (target / f"{stem}.gz").is_file():   # earlier downloads were verified when written
                download_file(mirror_url(BASE_URL + stem + ".gz"), target / f"{stem}.gz", MD5[stem])
    except FastresError as e:
        raise FastresError(f"{e}; or {where}") from e
    return {key: target / f"{stem}.gz" for key, stem in FILES.items()}


def load(data_dir: str = "", download: bool = True) -> ImageSet:
    paths = find_files(data_dir, download)
    return load_or_build("fashion-mnist", list(paths.values()), lambda: parse_files(paths))
