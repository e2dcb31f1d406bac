"""Dataset files -> uint8 tensors (host) -> normalised tensors on the device.

    ds = load_dataset("cifar10")            # ImageSet: uint8 (N, H, W, C), int64 labels; cached
    ds = upload(ds, "cuda")                 # once, outside the training timer
    data = prepare(ds, torch.float16, val_split=5000)   # inside the timer: fast device ops

Datasets: "cifar10" (official binary archive), "fashion-mnist" (official idx files), or a
path to a .npz (see npz.py). Files are looked for in --data-dir, $FASTRES_DATA and the cache dir
($FASTRES_CACHE, default ./data_cache), and downloaded there (checksummed) when missing and allowed.
"""
from __future__ import annotations

from ..config import check_dataset
from . import cifar10, fashion, npz
from .cache import search_dirs
from .device import DeviceData, prepare, upload
from .download import download_file
from .imageset import ImageSet

__all__ = ["ImageSet", "DeviceData", "load_dataset", "upload", "prepare", "download_file"]


def load_dataset(dataset: str, data_dir: str = "", download: bool = True) -> ImageSet:
    """The named dataset as a host ImageSet; FastresError (one line) for anything a user can fix."""
    check_dataset(dataset)
    search_dirs(data_dir)       # a wrong --data-dir or $FASTRES_DATA is an error for a .npz path too
    if dataset == "cifar10":
        return cifar10.load(data_dir, download)
    if dataset == "fashion-mnist":
        return fashion.load(data_dir, download)
    return npz.load(dataset)
