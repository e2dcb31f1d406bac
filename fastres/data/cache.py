"""Where dataset files are looked for, and the parsed-data cache.

Parsing the original files (gzip, byte records) takes a second or more; the parsed uint8/int64
tensors are saved once under the cache dir and loaded with `torch.load(weights_only=True)`, which
cannot run code, so a cache file is never more dangerous than the dataset itself. The cache file
name includes a key built from the source files' paths, sizes and mtimes, so a changed source is
re-parsed. A cache file that fails to load or validate is rebuilt with a warning, never fatal.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import FastresError
from .imageset import ImageSet, validate

CACHE_FORMAT = 1        # bump when the parsed layout changes, so old cache files are ignored
DEFAULT_CACHE = Path("data_cache")


def cache_dir() -> Path:
    """Downloads, extracted archives and parsed tensors go here ($FASTRES_CACHE, else ./data_cache)."""
    return Path(os.environ.get("FASTRES_CACHE") or DEFAULT_CACHE)


def search_dirs(data_dir: str = "") -> list[Path]:
    """Folders searched for dataset files, in order: --data-dir, $FASTRES_DATA, the cache dir."""
    dirs = []
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FastresError(f"--data-dir {data_dir} is not a directory")
        dirs.append(Path(data_dir))
    if os.environ.get("FASTRES_DATA"):      # a wrong setting is an error, not silently skipped
        if not Path(os.environ["FASTRES_DATA"]).is_dir():
            raise FastresError(f"$FASTRES_DATA {os.environ['FASTRES_DATA']} is not a directory")
        dirs.append(Path(os.environ["FASTRES_DATA"]))
    dirs += [cache_dir(), DEFAULT_CACHE]
    unique = {}
    for d in dirs:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`; rename it onto `dest` only if the block succeeds.

    Readers never see a half-written file, and a failed write leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp, whose 0600 mode would make shared caches unreadable.
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cache_key(sources: list[Path]) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    return hashlib.sha1(json.dumps([CACHE_FORMAT, stats]).encode()).hexdigest()[:12]


def load_or_build(name: str, sources: list[Path], build: Callable[[], ImageSet]) -> ImageSet:
    """The ImageSet parsed from `sources`, from the cache if a valid entry exists, else `build()`."""
    path = cache_dir() / f"{name}-{cache_key(sources)}.pt"
    if path.exists():
        try:
            return validate(ImageSet(**torch.load(path, map_location="cpu", weights_only=True)), str(path))
        except Exception as e:  # any failure here only means the cache is bad: re-parsing is always safe
            reason = (str(e).splitlines() or [type(e).__name__])[0]    # EOFError() has no message
            warnings.warn(f"parsed-data cache {path} is corrupt ({reason}); rebuilding it")
    ds = build()
    try:
        with atomic_path(path) as tmp:
            torch.save(asdict(ds), tmp)
    except OSError as e:  # a read-only cache dir costs only speed
        warnings.warn(f"could not write parsed-data cache {path} ({e}); continuing without it")
    return ds
