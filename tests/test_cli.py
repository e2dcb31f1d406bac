"""The command line end to end: outputs, recipe selection, and one-line errors with exit 2."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastres import cli, runner
from fastres.config import RECIPES, select_recipe
from fastres.errors import FastresError
from helpers import write_npz

TINY_FLAGS = ["--epochs", "2", "--batch-size", "64", "--width", "0.125", "--device", "cpu",
              "--crop-pad", "1", "--eval-batch-size", "128"]


def test_end_to_end_in_a_subprocess(tmp_path):
    data = write_npz(tmp_path / "tiny.npz")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fastres", "--dataset", str(data), *TINY_FLAGS, "--runs", "2",
                           "--output", str(out), "--plot", "--save", "--target", "0.5"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["run", "epoch"])
    assert len(lines[header + 1].split()) >= 5 and "2 run(s): accuracy" in proc.stdout
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "summary" and kinds.count("run") == 2
    assert records[0]["config"]["epochs"] == 2 and records[0]["env"]["torch"] == torch.__version__
    summary = records[-1]
    assert summary["runs"] == 2 and summary["acc_mean"] > 0.5                 # chance is 0.25
    assert (out / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = torch.load(out / "weights-seed1.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and len(state) > 10
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_target_selects_fastest_recipe_for_dataset():
    first_cifar = next(r for r in RECIPES.values() if r.config.dataset == "cifar10" and r.config.target >= 0.94)
    assert select_recipe("cifar10", 0.94).name == first_cifar.name
    assert select_recipe("fashion-mnist", 0.91, device="cpu").name == "fashion-cpu"
    with pytest.raises(FastresError, match="no recipe"):
        select_recipe("cifar10", 0.999)
    assert select_recipe("my.npz", 0.99).name == "npz-default"     # any target for an unknown set


def run_main(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["--target", "0"], "--target must be in (0, 1]"),
    (["--target", "1.5"], "--target must be in (0, 1]"),
    (["--recipe", "fashion-cpu", "--epochs", "0"], "--epochs must be positive"),
    (["--recipe", "fashion-cpu", "--lr", "-1"], "--lr must be positive"),
    (["--recipe", "fashion-cpu", "--batch-size", "0"], "--batch-size must be positive"),
    (["--recipe", "fashion-cpu", "--runs", "0"], "--runs must be positive"),
    (["--recipe", "no-such-recipe"], "unknown recipe"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; use cifar10, fashion-mnist or a path"),
    (["--dataset", "fashion-mnist", "--target", "0.99"], "no recipe for dataset 'fashion-mnist' reaches"),
    (["--nosuch"], "unrecognized arguments: --nosuch (see fastres train --help)"),
    (["study", "lr", "--nosuch"], "unrecognized arguments: --nosuch (see fastres study --help)"),
    (["--recipe", "fashion-cpu", "--dataset", "imagenet"], "unknown dataset"),
    (["--recipe", "fashion-cpu", "--epochs", "abc"], "invalid float value"),
    (["--recipe", "fashion-cpu", "--flip", "sideways"], "--flip must be one of"),
    (["--recipe", "fashion-cpu", "--plot"], "--plot and --save write into --output DIR"),
    (["--recipe", "fashion-cpu", "--contrast", "1"], "--contrast in [0, 1)"),
    (["--recipe", "fashion-cpu", "--cutout", "29"], "--cutout 29 does not fit inside 28x28 images"),
    (["--recipe", "fashion-cpu", "--crop-pad", "28"], "--crop-pad 28 must be smaller than the 28-px images"),
    (["--recipe", "fashion-cpu", "--muon-ns", "fast"], "--muon-ns must be one of airbench, speedrun"),
    (["--recipe", "fashion-cpu", "--muon-norm-every", "0"], "--muon-norm-every must be positive"),
    (["--recipe", "fashion-cpu", "--whiten-act", "tanh"], "--whiten-act must be one of"),
    (["--recipe", "fashion-cpu", "--width", "0"], "--width must be positive, got 0.0"),
    (["--recipe", "fashion-cpu", "--celu-alpha", "0"], "--celu-alpha must be positive"),
    (["--recipe", "fashion-cpu", "--threads", "-1"], "--threads must be >= 0, got -1"),
    (["--recipe", "fashion-cpu", "--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
    (["--recipe", "fashion-cpu", "--momentum", "1.5"], "--momentum must be in [0, 1], got 1.5"),
    (["--recipe", "fashion-cpu", "--warmup-frac", "2"], "--warmup-frac must be in [0, 1]"),
    (["--recipe", "fashion-cpu", "--output", "a_file"], "--output a_file is a file: give a directory"),
    (["--recipe", "fashion-cpu", "--epochs", "nan"], "--epochs must be a finite number, got nan"),
    (["--recipe", "fashion-cpu", "--width", "inf"], "--width must be a finite number, got inf"),
    (["--recipe", "fashion-cpu", "--ema-decay", "0.9", "--ema-ramp-power", "nan"], "--ema-ramp-power must be a finite"),
    (["--recipe", "fashion-cpu", "--erase-area", "0.1", "nan"], "--erase-area must be a finite number"),
    (["--recipe", "fashion-cpu", "--erase-p", "1", "--erase-ratio", "0", "0"], "--erase-area must be MIN MAX with"),
    (["--recipe", "fashion-cpu", "--erase-area", "0.5", "0.1"], "0 < MIN <= MAX <= 1"),
    (["--recipe", "fashion-cpu", "--seed", "99999999999999999999"], "--seed must be in [0, 2**62]"),
    (["--recipe", "fashion-cpu", "--threads", "100000"], "--threads at most 1024"),
    (["--recipe", "fashion-cpu", "--width", "1e300"], "--width at most 16"),
    (["--recipe", "fashion-cpu", "--device", "meta"], "unknown --device 'meta'; use auto, cpu, cuda or cuda:N"),
    (["--recipe", "fashion-cpu", "--output", "a_file/sub"], "--output a_file/sub cannot be written: Not a directory"),
    (["--recipe", "fashion-cpu", "--output", "taken", "--save"], "these must be files but are folders: weights-seed0.pt"),
    (["study", "--file", "bad_study.json", "--device", "cpu"], "study 'a', row 'r': --epochs must be of type float"),
    (["study", "--file", "good_study.json", "--output", "a_file/sub"], "--output a_file/sub cannot be written"),
])
def test_bad_input_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained before the error"))
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "taken" / "weights-seed0.pt").mkdir(parents=True)
    (tmp_path / "good_study.json").write_text('{"name": "g", "rows": [{"name": "r"}]}')
    (tmp_path / "bad_study.json").write_text('{"name": "a", "rows": [{"name": "r", "changes": {"epochs": "ten"}}]}')
    code, err = run_main(argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("fastres: error:") and message in err[0], err


def test_plot_without_matplotlib_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # as if not installed
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained before the error"))
    code, err = run_main(["--recipe", "fashion-cpu", "--output", str(tmp_path / "out"), "--plot"], capsys)
    assert code == 2 and err == ["fastres: error: --plot needs matplotlib: pip install 'fastres[plot]' "
                                 "(or leave out --plot)"]


@pytest.mark.parametrize("error, message", [
    (OSError(28, "No space left on device"), "fastres: error: OSError: [Errno 28] No space left on device"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 8 bytes."), "fastres: error: out of memory on the CPU at --batch-size"),
])
def test_environment_errors_are_one_line(error, message, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(runner, "train", fail)
    data = write_npz(tmp_path / "tiny.npz")
    code, err = run_main(["--dataset", str(data), *TINY_FLAGS, "--output", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err
    records = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "stopped"]        # the log says why it has no summary
    assert err[0].split(": ", 2)[2] in records[-1]["error"]


def test_non_square_images_too_narrow_for_the_net(tmp_path, capsys):
    data = write_npz(tmp_path / "tiny.npz", size=16)
    arrays = dict(np.load(data))
    for key in ("train_x", "test_x"):
        arrays[key] = np.ascontiguousarray(np.tile(arrays[key], (1, 4, 1))[:, :, :4])    # 64 x 4 images
    np.savez(tmp_path / "narrow.npz", **arrays)
    code, err = run_main(["--dataset", str(tmp_path / "narrow.npz"), *TINY_FLAGS, "--crop-pad", "0"], capsys)
    assert code == 2 and err == ["fastres: error: images must be at least 16 px on each side for resnet9; "
                                 "the shorter side is 4 px"]


def test_batch_larger_than_training_set(tmp_path, capsys):
    data = write_npz(tmp_path / "tiny.npz", n_train=100)
    code, err = run_main(["--dataset", str(data), *TINY_FLAGS[:2], "--batch-size", "128", "--device", "cpu"], capsys)
    assert code == 2 and len(err) == 1 and "larger than the training set" in err[0]


def test_cuda_requested_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(["--recipe", "fashion-cpu", "--device", "cuda"], capsys)
    assert code == 2 and err == ["fastres: error: --device cuda requested but CUDA is not available (use --device cpu)"]


def test_missing_data_offline_says_where(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTRES_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    code, err = run_main(["--recipe", "cifar10-myrtle", "--device", "cpu", "--no-download",
                          "--data-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and len(err) == 1 and "cifar-10" in err[0].lower()


def test_out_of_memory_suggests_smaller_batch(tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(runner, "train", oom)
    data = write_npz(tmp_path / "tiny.npz")
    code, err = run_main(["--dataset", str(data), *TINY_FLAGS], capsys)
    assert code == 2 and len(err) == 1 and "out of memory" in err[0] and "smaller batch" in err[0]


def test_list_recipes(capsys):
    assert cli.main(["--list-recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)


def test_recipe_claims_match_their_result_files():
    """A recipe's claim (printed by --list-recipes) states the figures of the result file it cites."""
    root = Path(__file__).resolve().parents[1]
    claimed = {name: r.claim for name, r in RECIPES.items() if r.claim}
    assert {"cifar10-94", "fashion-94", "fashion-cpu"} <= set(claimed)
    for name, claim in claimed.items():
        m = re.match(r"(\d+\.\d+) \+- (\d+\.\d+)% in (\d+\.\d+) \+- (\d+\.\d+) s, (\d+) runs.*"
                     r"\((bench/results/[^ )]+)\)$", claim)
        assert m, f"{name}: claim not in the expected form: {claim}"
        text = (root / m[6]).read_text()
        lines = text.splitlines() if m[6].endswith(".jsonl") else [text]
        records = [json.loads(line) for line in lines]
        if "summary" in records[0]:                                 # a gpu_check.sh file: one object
            records = [records[0]["start"], records[0]["summary"]]
        start, summary = records[0], records[-1]
        assert start["type"] == "start" and summary["type"] == "summary", name
        # The runs trained this recipe as registered now (run-time settings aside): editing a
        # measured recipe makes its claim stale, and this test says so.
        recipe = dataclasses.asdict(RECIPES[name].config)
        runtime = {"seed", "runs", "device", "output", "data_dir", "download", "plot", "save", "eval_every",
                   "threads", "compile", "deterministic", "parallel", "dist_backend"}
        differ = {k for k in start["config"].keys() & recipe.keys() - runtime
                  if json.loads(json.dumps(recipe[k])) != start["config"][k]}
        assert not differ, f"{name}: recipe differs from its measured runs in {sorted(differ)}"
        for value, key, scale in ((m[1], "acc_mean", 100), (m[2], "acc_std", 100), (m[3], "time_mean", 1),
                                  (m[4], "time_std", 1)):
            digits = len(value.split(".")[1])
            assert float(value) == round(summary[key] * scale, digits), (name, key)
        assert int(m[5]) == summary["runs"], name
        reached = re.search(r" runs \((\d+) >= ", claim)           # stated by the GPU claims
        assert reached is None or int(reached[1]) == summary["reached"], name


def test_gpu_recipe_on_cpu_drops_compile_unless_asked():
    parser = cli.build_parser()
    cfg, recipe = cli.config_from_args(parser.parse_args(["train", "--target", "0.94", "--device", "cpu"]))
    assert recipe.name == "cifar10-94" and recipe.config.compile and not cfg.compile
    cfg, _ = cli.config_from_args(parser.parse_args(["train", "--recipe", "cifar10-94", "--device", "cpu",
                                                     "--compile"]))
    assert cfg.compile


@pytest.mark.parametrize("flags", [["--batch-size", "1"], ["--ghost-batch", "1"]])
def test_one_value_per_batch_norm_channel_is_one_line(flags, tmp_path, capsys):
    # resnet18 ends on 1x1 maps: one image per (ghost) batch leaves its batch norms nothing to
    # normalise, which PyTorch and the fused layer report as a ValueError (it was a traceback).
    data = write_npz(tmp_path / "tiny.npz", n_train=64, n_test=32, size=16)
    code, err = run_main(["--dataset", str(data), *TINY_FLAGS, "--arch", "resnet18", "--epochs", "0.1", *flags],
                         capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("fastres: error: --batch-size"), err
    assert "one value per channel" in err[0] and "use larger batches" in err[0]


def test_settings_that_change_nothing_are_said_once():
    """--ema-decay 0 on cifar10-94 also switches off its lookahead and ramp, and --tta-fraction
    means nothing without TTA: said as notes (they were silently ignored before 2026-12-04)."""
    parser = cli.build_parser()
    cfg, _ = cli.config_from_args(parser.parse_args(["train", "--recipe", "cifar10-94", "--ema-decay", "0",
                                                     "--tta", "0", "--tta-fraction", "0.5", "--device", "cpu"]))
    assert cli.idle_settings(cfg) == ["--lookahead and --ema-ramp-power have no effect without --ema-decay",
                                      "--tta-fraction has no effect with --tta 0"]
    cfg, _ = cli.config_from_args(parser.parse_args(["train", "--recipe", "cifar10-94", "--device", "cpu"]))
    assert cli.idle_settings(cfg) == []
    from fastres.config import RECIPES
    assert not any(cli.idle_settings(r.config) for r in RECIPES.values())    # no recipe carries an idle setting
