"""Bad arguments to the bench/ scripts: one error line naming the problem, exit status 2, no
traceback, and no argparse usage block before the line (fastres.errors.Parser; until 2026-12-04
every argparse error printed one). Before 2026-12-02 some raised UnboundLocalError, FastresError
and ZeroDivisionError, or bench/kernels.py took a knob that FASTRES_BN_TUNING refuses.
bench/compile_check.py's are in tests/test_compile_check.py (it runs in a subprocess)."""
from pathlib import Path

import pytest
import torch

from helpers import load_bench

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@pytest.mark.parametrize("script, argv, message", [
    ("loader", ["--n", "0"], "need --batch-size >= 1, --n >= --batch-size"),
    ("loader", ["--n", "100", "--batch-size", "512"], "--n 100"),
    ("host_overhead", ["--iters", "0"], "--iters must be positive, got 0"),
    ("launch_path", ["--iters", "0"], "--iters must be positive, got 0"),
    ("mfu", ["--recipe", "nope"], "mfu.py: error: unknown recipe 'nope'"),
    ("mfu", ["--runs", "0"], "--runs must be positive, got 0"),
    ("mfu", ["--from-json", "not-a-result.json"], "--from-json not-a-result.json: not a recipe result"),
    ("l2_model", ["--l2", "0"], "--l2 and --mb must be positive sizes in MB"),
    ("l2_model", ["--mb", "-5"], "--l2 and --mb must be positive sizes in MB"),
    ("kernels", ["--smoke", "--iters", "0"], "--iters must be >= 1"),
    ("kernels", ["--smoke", "--tile", "3000"], "tile must be a power of two, got 3000"),
    ("kernels", ["--smoke", "--warps", "0"], "warps must be >= 1, got 0"),
    ("kernels", ["--smoke", "--fuse-finalize", "2"], "fuse_finalize must be 0 or 1, got 2"),
    ("kernels", ["--smoke", "--tile", "-5"], "--tile must not be negative, got -5"),     # it named 'tile=-5' the
    ("kernels", ["--smoke", "--recipes", ","], "--recipes ',' names no recipe"),        # wrong form; ran nothing
    ("l2_model", ["--mb", "0.01"], "--l2 and --mb must be 0.0625 to 4096 MB"),           # ZeroDivisionError
    ("l2_model", ["--l2", "1e9"], "--l2 and --mb must be 0.0625 to 4096 MB"),            # MemoryError
    # A result path that cannot be written: refused before the work (it was a traceback after it).
    ("kernels", ["--smoke", "--out", "adir"], "--out adir is a folder, not a file"),
    ("host_overhead", ["--out", "adir"], "--out adir is a folder, not a file"),
    ("launch_path", ["--out", "adir"], "--out adir is a folder, not a file"),
    ("loader", ["--json", "adir"], "--json adir is a folder, not a file"),
    ("mfu", ["--smoke", "--out", "adir"], "--out adir is a folder, not a file"),
    ("mfu", ["--smoke", "--out", "not-a-result.json/x.json"], "--out not-a-result.json/x.json cannot be written"),
    ("compare_runs", ["not-a-result.json", "--vs", "not-a-result.json", "--json", "adir"],
     "--json adir is a folder, not a file"),
    ("recipe_json", ["runs.jsonl", "adir", "--recipe", "cifar10-94"], "out: adir is a folder, not a file"),
    ("results_table", [], "error: the following arguments are required: files"),
    pytest.param("kernels", [], "error: no CUDA device: only --smoke runs on CPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU it would run")),
])
def test_bad_arguments_are_one_error_line(script, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not-a-result.json").write_text("{}")
    (tmp_path / "adir").mkdir()
    main = load_bench(script).main
    try:
        code = main(argv)
    except SystemExit as e:              # argparse's error()
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err      # no usage block, no traceback


def test_launch_path_refuses_the_interpreter(capsys, monkeypatch):
    # Triton's interpreter compiles nothing, so there would be no compiled launcher to time.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    try:
        code = load_bench("launch_path").main([])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "error: TRITON_INTERPRET is set: the interpreter compiles nothing; " \
        "unset it" in err[0], err


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these would run")
@pytest.mark.parametrize("argv, message", [
    # It started hours of training on a CPU without a word (2026-12-03 audit).
    (["--recipe", "cifar10-94"], "recipe cifar10-94 is a GPU recipe and this machine has no CUDA device"),
    # An H100 run's file read on a CPU gave MFU 25348%: the matmul rate must be the same machine's.
    (["--from-json", str(RESULTS / "2026-11-28-h100-80gb-hbm3-5d9fdd7-cifar10-94.json")],
     "--from-json: the run was timed on NVIDIA H100 80GB HBM3, this process runs on cpu"),
])
def test_mfu_refuses_what_it_cannot_measure_on_this_machine(argv, message, capsys):
    assert load_bench("mfu").main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err), err
