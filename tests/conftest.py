"""Shared pytest setup.

Without CUDA, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET must be set
before any kernel is decorated, i.e. before fastres.kernels is first imported, so it is set here.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: trains on real data for tens of seconds")
