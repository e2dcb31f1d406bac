"""Shared pytest setup.

Without CUDA, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET must be set
before any kernel is decorated, i.e. before fastres.kernels is first imported, so it is set here.

The parsed-data cache goes to a private temp dir for the session (inherited by the CLI
subprocesses), so tests never write into the checkout's data_cache/: every .npz a test builds
would otherwise leave a cache file there for good. Real datasets are still found in data_cache/
(it stays on the search path) and are parsed once per session (~2 s).
"""
import os
import shutil
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_SESSION_CACHE = tempfile.mkdtemp(prefix="fastres-test-cache-")
os.environ["FASTRES_CACHE"] = _SESSION_CACHE


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: trains on real data for tens of seconds")


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
