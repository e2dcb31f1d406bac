"""Downloading (checksummed, atomic, with a text progress bar) and safe archive extraction.

Set $FASTRES_MIRROR to a base URL to fetch the same file names from somewhere else (the tests
point it at a local HTTP server); checksums are verified either way.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from ..errors import FastresError
from .cache import atomic_path

TIMEOUT_S = 60          # per socket operation, not for the whole download
CHUNK_BYTES = 1 << 20


def mirror_url(url: str) -> str:
    """`url`, or the same file name under $FASTRES_MIRROR when that is set."""
    mirror = os.environ.get("FASTRES_MIRROR")
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[1]}" if mirror else url


class _Progress:
    """`name: 12.3/162.6 MB (7%)` on stderr, redrawn in place at most once per percent."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.shown = name, total, -1

    def update(self, done: int) -> None:
        if self.total:
            percent = 100 * done // self.total
            if percent != self.shown:
                self.shown = percent
                sys.stderr.write(f"\rdownloading {self.name}: {done / 1e6:.1f}/{self.total / 1e6:.1f} MB ({percent}%)")
        elif done // (10 * CHUNK_BYTES) != self.shown:   # size unknown: every 10 MB
            self.shown = done // (10 * CHUNK_BYTES)
            sys.stderr.write(f"\rdownloading {self.name}: {done / 1e6:.1f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def download_file(url: str, dest: Path, md5: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, verifying its MD5; `dest` appears only once complete and verified."""
    dest = Path(dest)
    digest, done, total = hashlib.md5(usedforsecurity=False), 0, 0
    with atomic_path(dest) as tmp:
        bar = None
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                bar = _Progress(dest.name, total) if progress else None
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if bar:
                        bar.update(done)
        except urllib.error.HTTPError as e:
            raise FastresError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise FastresError(f"download of {url} failed: {e.reason}") from e
        except (http.client.HTTPException, OSError, ValueError) as e:    # ValueError: a malformed URL
            raise FastresError(f"download of {url} failed: {e or type(e).__name__}") from e
        finally:
            if bar:
                bar.close()
        # http.client does not raise when the server closes early: compare with Content-Length.
        if total and done != total:
            raise FastresError(f"download of {url} was truncated: got {done} of {total} bytes")
        if digest.hexdigest() != md5:
            raise FastresError(f"checksum mismatch for {url}: expected MD5 {md5}, got {digest.hexdigest()}")
    return dest


def _safe_members(tar: tarfile.TarFile, archive: Path):
    """Fallback for Pythons without tarfile's "data" filter: plain files and folders inside the target only."""
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if not (member.isfile() or member.isdir()) or path.is_absolute() or ".." in path.parts:
            raise FastresError(f"archive {archive} has an unsafe member {member.name!r}; refusing to extract it")
        yield member


def extract_folder(archive: Path, folder: str, dest_dir: Path) -> Path:
    """Extract `archive` and move its top-level `folder` to `dest_dir/folder`, all or nothing."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: no traversal, links or devices
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp, members=_safe_members(tar, archive))
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise FastresError(f"cannot extract {archive}: corrupt, truncated or unsafe archive ({e}); "
                               "delete it and try again") from e
        except OSError as e:
            raise FastresError(f"cannot extract {archive} into {dest_dir}: {e}") from e
        if not (tmp / folder).is_dir():
            raise FastresError(f"archive {archive} does not contain the folder {folder}/")
        os.replace(tmp / folder, dest_dir / folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir / folder
