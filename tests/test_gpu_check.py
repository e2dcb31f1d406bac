"""bench/gpu_check.sh --smoke: the one-call GPU verification script's plumbing, on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import load_bench

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_result_file(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    for what in ("all-env.json", "kernel-sweep.json", "kernels.json", "host-overhead.json", "loader.json",
                 "fashion-94.json", "fashion-94-mfu.json"):
        assert any(name.endswith(what) for name in names), (what, names)
    recipe = json.loads(next(tmp_path.glob("*-fashion-94.json")).read_text())
    assert recipe["summary"]["runs"] == 2 and len(recipe["runs"]) == 2
    assert recipe["start"]["config"]["dataset"] == "fashion-mnist"
    mfu = json.loads(next(tmp_path.glob("*-mfu.json")).read_text())
    assert mfu["total_flops"] > 0 and 0 < mfu["mfu"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir()), names        # no empty file either
    assert load_bench("results_table").main([str(p) for p in sorted(tmp_path.glob("*.json"))]) == 0
    if (REPO / "data_cache" / "cifar-10-batches-bin").is_dir() or os.environ.get("FASTRES_DATA"):
        # The smoke recipes miss 94% by far, so the pre-set fallback runs: the same seeds, more epochs.
        base = json.loads(next(tmp_path.glob("*-cifar10-94.json")).read_text())
        more = json.loads(next(tmp_path.glob("*-cifar10-94-more-epochs.json")).read_text())
        assert base["summary"]["acc_mean"] < 0.94 and more["extra_flags"] == "--epochs 1.5"
        assert more["start"]["config"]["epochs"] == 1.5 and base["start"]["config"]["epochs"] == 1
        assert [r["seed"] for r in more["runs"]] == [r["seed"] for r in base["runs"]] == [0, 1]
        # The compare phase: the same seeds with either BN, launched op by op or as CUDA graphs,
        # and the fused op as triton_op where this torch has it (>= 2.6; else skipped, saying so).
        variants = [("fused", "", True, "default"), ("torch-bn", "--no-fused-bn", False, "default"),
                    ("fused-cudagraphs", "--compile-mode reduce-overhead", True, "reduce-overhead"),
                    ("torch-bn-cudagraphs", "--no-fused-bn --compile-mode reduce-overhead", False, "reduce-overhead")]
        if hasattr(torch.library, "triton_op"):
            variants.append(("fused-triton-op", "FASTRES_BN_OP=triton_op", True, "default"))
        else:
            assert "skipped cifar10-94-cmp-fused-triton-op (FASTRES_BN_OP=triton_op needs torch >= 2.6)" in proc.stdout
            assert not list(tmp_path.glob("*-cmp-fused-triton-op.json"))
        for label, flags, fused, mode in variants:
            cmp = json.loads(next(tmp_path.glob(f"*-cifar10-94-cmp-{label}.json")).read_text())
            config = cmp["start"]["config"]
            assert cmp["extra_flags"] == flags and [r["seed"] for r in cmp["runs"]] == [0, 1], label
            assert (config["fused_bn"], config["compile_mode"]) == (fused, mode), label
    # MFU from an existing recipe result (what gpu_check.sh does on a GPU): no new training.
    recipe_file = next(tmp_path.glob("*-fashion-94.json"))
    out = tmp_path / "mfu-from-json.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "mfu.py"), "--from-json", str(recipe_file),
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_json = json.loads(out.read_text())
    assert from_json["recipe"] == "fashion-94" and from_json["runs"] == 2
    assert from_json["time_s_mean"] == recipe["summary"]["time_mean"] and from_json["total_flops"] > 0


def test_gpu_check_phase_and_budget(tmp_path):
    # --phase kernels with no time budget left: the required kernel benchmark runs, the optional
    # sweep, loader and suite are skipped (and say so); no recipe runs. A bad phase is refused.
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_BUDGET": "0"}
    script = str(REPO / "bench" / "gpu_check.sh")
    proc = subprocess.run(["bash", script, "--smoke", "--phase", "kernels", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith("-kernels-env.json") and names[1].endswith("-kernels.json"), names
    assert proc.stdout.count("skipped (budget 0s)") == 4, proc.stdout[-3000:]
    # the kernel breakdown of the file just written, in the log
    assert "| recipe | layer | MiB | kernel | grid | µs alone |" in proc.stdout, proc.stdout[-3000:]
    # --phase host (a last call's leftovers): the host cost, loader and suite, each optional.
    host = tmp_path / "host"
    proc = subprocess.run(["bash", script, "--smoke", "--phase", "host", str(host)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.count("skipped (budget 0s)") == 3, proc.stdout[-3000:]
    assert [p.name[-13:] for p in host.iterdir()] == ["host-env.json"]
    bad = subprocess.run(["bash", script, "--phase", "cifar10"], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and "--phase must be" in bad.stdout


def test_mfu_counts_selective_tta_and_reads_shapes_from_the_log(tmp_path):
    from fastres.config import Config
    mfu = load_bench("mfu")
    cfg = Config(arch="airbench", width=0.25, tta=2, batch_size=100)
    full = mfu.run_flops(cfg, 3, 32, 10, 0, 1000, steps=7)
    part = mfu.run_flops(cfg.replace(tta_fraction=0.25), 3, 32, 10, 0, 1000, steps=7)
    f = full["forward_flops_per_image"]
    assert full["train_flops"] == 3 * f * 7 * 100 and full["eval_flops"] == f * 1000 * 6
    assert part["eval_flops"] == f * (1000 + 250 * 6)          # one plain pass + TTA for the unsure 25%
    # A recipe log names its image shape, so --from-json needs no dataset; without those fields
    # (older logs) the dataset is loaded for them: the same count either way.
    from fastres.runner import run_many
    cfg = Config(dataset="fashion-mnist", arch="airbench", width=0.125, epochs=1, batch_size=128,
                 train_subset=512, test_subset=256, device="cpu", eval_every=0, output=str(tmp_path / "run"))
    run_many(cfg, printer=lambda *a: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "runs.jsonl").read_text().splitlines()]
    result = {"recipe": "test", "start": records[0], "runs": [r for r in records if r["type"] == "run"],
              "summary": records[-1]}
    assert result["start"]["image_size"] == 28 and result["start"]["channels"] == 1
    counts = []
    for keep_shape in (True, False):
        if not keep_shape:
            for key in ("image_size", "channels", "classes"):
                del result["start"][key]
        path = tmp_path / f"recipe-{keep_shape}.json"
        path.write_text(json.dumps(result))
        assert mfu.main(["--from-json", str(path), "--out", str(tmp_path / "mfu.json")]) == 0
        counts.append(json.loads((tmp_path / "mfu.json").read_text())["total_flops"])
    assert counts[0] == counts[1] > 0


def test_recipe_json_keeps_finished_runs_of_a_cut_short_recipe(tmp_path):
    # gpu_check.sh stops a recipe at its deadline: the runs that finished still make a result,
    # marked incomplete, with the summary computed from them.
    mod = load_bench("recipe_json")
    start = {"type": "start", "config": {"target": 0.9, "runs": 5}}
    runs = [{"type": "run", "seed": s, "accuracy": a, "time_s": t}
            for s, a, t in ((0, 0.91, 2.0), (1, 0.93, 2.2), (2, 0.92, 2.1))]
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [start, *runs]))
    out = tmp_path / "r.json"
    assert mod.main([str(log), str(out), "--recipe", "x", "--flags=--no-fused-bn"]) == 0
    result = json.loads(out.read_text())
    assert not result["complete"] and result["runs_asked"] == 5 and len(result["runs"]) == 3
    assert result["summary"]["runs"] == 3 and abs(result["summary"]["acc_mean"] - 0.92) < 1e-12
    assert result["extra_flags"] == "--no-fused-bn" and not result["fused_bn_fallback"]
    log.write_text(json.dumps(start) + "\n")                        # nothing finished: no file
    assert mod.main([str(log), str(tmp_path / "none.json"), "--recipe", "x"]) == 1
    assert not (tmp_path / "none.json").exists()


@pytest.mark.slow
def test_gpu_check_defers_the_more_epochs_fallback_to_the_next_phase(tmp_path):
    # The cifar phase with no budget left: cifar10-94 (required) misses 94%, its fallback cannot
    # fit, so it is left in the state folder; the next phase on the machine runs it after fashion-94.
    if not (REPO / "data_cache" / "cifar-10-batches-bin").is_dir() and not os.environ.get("FASTRES_DATA"):
        pytest.skip("needs CIFAR-10 (data_cache/ or FASTRES_DATA)")
    state, out = tmp_path / "state", tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_STATE": str(state)}
    script = str(REPO / "bench" / "gpu_check.sh")
    cifar = subprocess.run(["bash", script, "--smoke", "--phase", "cifar", str(out)], capture_output=True, text=True,
                           timeout=600, env={**env, "GPU_CHECK_BUDGET": "0",
                                             "GPU_CHECK_CIFAR_FLAGS": "--no-fused-bn --label-smoothing 0.3"}, cwd=REPO)
    assert cifar.returncode == 0, cifar.stdout[-3000:] + cifar.stderr[-3000:]
    assert "cifar10-94-more-epochs left to the next phase" in cifar.stdout and (state / "more-epochs").is_file()
    assert not list(out.glob("*-more-epochs.json"))
    # GPU_CHECK_CIFAR_FLAGS reach cifar10-94's runs and its result file
    base = json.loads(next(out.glob("*-cifar10-94.json")).read_text())
    assert base["extra_flags"] == "--no-fused-bn --label-smoothing 0.3"
    assert base["start"]["config"]["fused_bn"] is False and base["start"]["config"]["label_smoothing"] == 0.3
    fashion = subprocess.run(["bash", script, "--smoke", "--phase", "fashion", str(out)], capture_output=True,
                             text=True, timeout=600, env=env, cwd=REPO)
    assert fashion.returncode == 0, fashion.stdout[-3000:] + fashion.stderr[-3000:]
    more = json.loads(next(out.glob("*-cifar10-94-more-epochs.json")).read_text())
    assert more["start"]["config"]["epochs"] == 1.5 and len(more["runs"]) == 2
    assert more["extra_flags"] == "--no-fused-bn --label-smoothing 0.3 --epochs 1.5"    # the base's flags too
    assert not (state / "more-epochs").exists() and not (state / "more-epochs-flags").exists()


def test_gpu_check_deadline_stops_steps(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_DEADLINE": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke", "--phase", "fashion",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 1 and "deadline reached, not started" in proc.stdout, proc.stdout[-3000:]
    assert [p.name.rsplit("-", 2)[-2:] for p in tmp_path.iterdir()] == [["fashion", "env.json"]]
