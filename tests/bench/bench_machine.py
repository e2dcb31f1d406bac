"""What machine a benchmark ran on: the device fields added to pytest-benchmark's machine_info,
and the device slug that names a baseline folder (bench/baselines/<slug>/).

    python tests/bench/bench_machine.py          # prints the slug: cpu-amd-epyc-2c, h100-80gb-hbm3

Timings are only comparable on the same device with the same software, so every field that
changes them is recorded; conftest.py warns when a comparison crosses any of them.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess

# Fields compared by conftest.py. DEVICE_FIELDS name the hardware (a mismatch makes the numbers
# meaningless); the others change speed on the same hardware.
DEVICE_FIELDS = ("device", "gpu")
SOFTWARE_FIELDS = ("gpu_driver", "cuda", "torch", "triton", "torch_threads")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else whatever platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    # The container's share, not the host's core count.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def nvidia_driver() -> str | None:
    """The NVIDIA driver version (e.g. 550.54.15); torch only knows the CUDA driver API level."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        return out.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def device_info() -> dict:
    """The fields added to machine_info (all JSON-serialisable; None where not applicable)."""
    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else None
    driver = nvidia_driver() if cuda else None
    if cuda and driver is None:                              # no nvidia-smi: the CUDA driver API level
        api = getattr(torch._C, "_cuda_getDriverVersion", lambda: 0)()      # e.g. 12040 -> 12.4
        driver = f"CUDA driver API {api // 1000}.{api % 1000 // 10}" if api else "unknown"
    return {
        "device": device_slug(gpu),
        "gpu": gpu,
        "gpu_driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "torch_threads": torch.get_num_threads(),
    }


def device_slug(gpu: str | None = None) -> str:
    """h100-80gb-hbm3 for "NVIDIA H100 80GB HBM3" (the naming of bench/gpu_check.sh's result
    files), cpu-<model>-<cores>c without a GPU."""
    if gpu is None:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if gpu:
        return slugify(re.sub(r"^nvidia\s+", "", gpu, flags=re.IGNORECASE))
    return slugify(f"cpu {cpu_name()} {usable_cores()}c")


if __name__ == "__main__":
    print(device_slug())
