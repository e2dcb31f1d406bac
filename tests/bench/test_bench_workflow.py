"""The baseline workflow of bench/README.md, end to end, on a tiny benchmark whose time is a sleep.

Each test runs pytest in a subprocess in a scratch project laid out like this repository:
tests/bench/ holds copies of this folder's conftest.py and bench_machine.py (the code under
test) and one benchmark, `sleepy`, that sleeps SLEEP_S times $BENCH_SLOWDOWN per call and
appends a line to a call log. A sleep dominates the time, so a 3x
slowdown is unmistakable and an unslowed rerun lands well inside 10% even on a busy machine.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SLEEP_S = 0.1
ROUNDS, WARMUP = 5, 1

SLEEPY = f'''
import os, time

def test_sleepy(benchmark):
    def work():
        with open(os.environ["BENCH_CALL_LOG"], "a") as log:
            log.write("call\\n")
        time.sleep({SLEEP_S} * float(os.environ.get("BENCH_SLOWDOWN", "1")))
    benchmark.pedantic(work, rounds={ROUNDS}, warmup_rounds={WARMUP})
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("benchproject")
    bench = root / "tests" / "bench"
    bench.mkdir(parents=True)
    for name in ("conftest.py", "bench_machine.py"):
        shutil.copy(HERE / name, bench / name)
    (bench / "test_sleepy.py").write_text(SLEEPY)
    return root


def run_pytest(project: Path, *args: str, slowdown: float = 1.0, path: str = "tests/bench"):
    """(exit code, output, calls of the benchmarked function) of `pytest <path> <args>` run from
    the project root (path "" = plain `pytest`, as CI runs it)."""
    log = project / "calls.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_SLOWDOWN=str(slowdown), BENCH_CALL_LOG=str(log), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", *([path] if path else []), "-p", "no:cacheprovider",
                           "--rootdir", str(project), "--benchmark-storage", "store", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    calls = len(log.read_text().splitlines()) if log.exists() else 0
    return proc.returncode, proc.stdout + proc.stderr, calls


@pytest.fixture(scope="module")
def baseline(project) -> Path:
    """`--benchmark-save=baseline`: measures for real and writes store/<machine id>/0001_baseline.json."""
    code, out, calls = run_pytest(project, "--benchmark-save=baseline")
    assert code == 0, out
    assert calls == WARMUP + ROUNDS, out                  # saving switched benchmarking on
    (saved,) = (project / "store").glob("*/0001_baseline.json")
    return saved


def saved_files(project: Path) -> set:
    return set((project / "store").glob("**/*.json"))


@pytest.mark.parametrize("path", ["tests/bench", ""], ids=["pytest-tests-bench", "plain-pytest"])
def test_default_run_is_a_smoke_run(project, path):
    """Without a benchmarking option, whether this conftest loads before pytest-benchmark's
    session (path given) or during collection (plain `pytest` from the root)."""
    before = saved_files(project)
    code, out, calls = run_pytest(project, path=path)
    assert code == 0, out
    assert calls == 1, out                                # benchmark disabled: one call, no rounds
    assert saved_files(project) == before                 # nothing saved
    assert "benchmark: 1 tests" not in out                # no results table


def test_saved_run_records_the_device(baseline):
    info = json.loads(baseline.read_text())["machine_info"]
    for field in ("device", "gpu", "gpu_driver", "cuda", "torch", "triton", "torch_threads"):
        assert field in info, info
    assert info["device"] and info["torch"] and info["torch_threads"] == 1


def test_compare_fails_on_a_3x_slowdown(project, baseline):
    code, out, calls = run_pytest(project, "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%",
                                  slowdown=3.0)
    assert code != 0, out
    assert "Performance has regressed" in out and "test_sleepy" in out, out
    assert calls == WARMUP + ROUNDS                       # --benchmark-compare alone measures


def test_compare_passes_without_slowdown(project, baseline):
    code, out, _ = run_pytest(project, "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%")
    assert code == 0, out
    assert "Performance has regressed" not in out and "DIFFERENT" not in out, out


@pytest.mark.parametrize("path", ["tests/bench", ""], ids=["pytest-tests-bench", "plain-pytest"])
def test_compare_against_another_gpu_warns(project, baseline, path):
    """A baseline from another card must produce a visible, specific warning. With plain
    `pytest` this conftest loads after pytest-benchmark compared machine info, so it has to
    compare again with its own hooks."""
    other = baseline.with_name("0002_other-gpu.json")
    data = json.loads(baseline.read_text())
    data["machine_info"].update(gpu="NVIDIA Imaginary X9000", device="imaginary-x9000")
    other.write_text(json.dumps(data))
    try:
        code, out, _ = run_pytest(project, "--benchmark-compare=0002", path=path)
    finally:
        other.unlink()
    assert code == 0, out
    assert "DIFFERENT DEVICE" in out and "saved 'NVIDIA Imaginary X9000'" in out, out
