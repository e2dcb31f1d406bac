"""pytest-benchmark setup for the regression suite (see bench/README.md for the workflow).

Smoke by default: unless benchmarking is asked for explicitly, benchmarks are disabled and each
benchmarked function runs exactly once, so plain `pytest` (CI) executes the whole suite quickly
and it cannot rot. Any of these options turns real benchmarking on: --benchmark-enable,
--benchmark-only, --benchmark-save, --benchmark-autosave, --benchmark-save-data,
--benchmark-json, --benchmark-compare, --benchmark-compare-fail, --benchmark-histogram,
--benchmark-cprofile. (--benchmark-disable always wins.) The switch is session-wide.

Machine info: the device fields of bench_machine.py (GPU name, driver, CUDA, torch, triton,
torch threads) are saved with every run, and a comparison against a run with different ones
warns, naming the fields.
"""
from __future__ import annotations

import bench_machine

# Options whose use means "really measure". Their pytest-benchmark option names (dest).
REQUESTS = ("benchmark_enable", "benchmark_only", "benchmark_save", "benchmark_autosave",
            "benchmark_save_data", "benchmark_json", "benchmark_compare", "benchmark_compare_fail",
            "benchmark_histogram", "benchmark_cprofile")


def benchmarking_requested(config) -> bool:
    return any(config.getoption(name, None) for name in REQUESTS)


def pytest_configure(config):
    if not hasattr(config.option, "benchmark_disable"):
        return                                            # pytest-benchmark is not loaded
    session = getattr(config, "_benchmarksession", None)
    if not benchmarking_requested(config):
        # `pytest tests/bench`: this runs before pytest-benchmark builds its session (it reads the
        # option). Plain `pytest` from the repo root loads this conftest only during collection,
        # after the session exists, so the session is switched too.
        config.option.benchmark_disable = True
        if session is not None:
            session.disabled = True
    elif session is not None and session.compare:
        # Loaded late (plain `pytest` from the root): pytest-benchmark compared machine_info
        # before this file's hooks existed, so without the device fields. Compare again.
        session.logger.warning("tests/bench/conftest.py loaded after pytest-benchmark compared machine "
                               "info; re-comparing with the device fields. Pass tests/bench on the "
                               "command line to avoid this (bench/README.md).")
        session.handle_loading()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(bench_machine.device_info())


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """A short, specific warning on top of pytest-benchmark's whole-dict one (which also fires on
    a mere host-name change, so it is easy to ignore)."""
    saved = compared_benchmark.get("machine_info", {})
    where = str(benchmarksession.storage)     # (storage.location fails for storage outside the cwd)

    def differing(fields):
        return [f"{k}: now {machine_info.get(k)!r}, saved {saved.get(k)!r}"
                for k in fields if machine_info.get(k) != saved.get(k)]

    device = differing(bench_machine.DEVICE_FIELDS)
    if device:
        benchmarksession.logger.warning(
            f"DIFFERENT DEVICE: comparing against benchmarks from another device ({'; '.join(device)}) "
            f"in {where}; the timings are not comparable. Use that device's baseline folder "
            f"(bench/baselines/<device>/).")
    software = differing(bench_machine.SOFTWARE_FIELDS)
    if software:
        benchmarksession.logger.warning(
            f"DIFFERENT SOFTWARE: the saved benchmarks in {where} ran with other settings "
            f"({'; '.join(software)}); differences may come from these, not from the code.")
