"""bench/gpu_check.sh --smoke: the one-call GPU verification script's plumbing, on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_result_file(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    for what in ("all-env.json", "kernel-sweep.json", "kernels.json", "loader.json", "fashion-94.json",
                 "fashion-94-mfu.json"):
        assert any(name.endswith(what) for name in names), (what, names)
    recipe = json.loads(next(tmp_path.glob("*-fashion-94.json")).read_text())
    assert recipe["summary"]["runs"] == 2 and len(recipe["runs"]) == 2
    assert recipe["start"]["config"]["dataset"] == "fashion-mnist"
    mfu = json.loads(next(tmp_path.glob("*-mfu.json")).read_text())
    assert mfu["total_flops"] > 0 and 0 < mfu["mfu"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPU_CHECK_BUDGET": "0"}
    script = str(REPO / "bench" / "gpu_check.sh")
    proc = subprocess.run(["bash", script, "--smoke", "--phase", "kernels", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith("-kernels-env.json") and names[1].endswith("-kernels.json"), names
    assert proc.stdout.count("skipped (budget 0s)") == 3, proc.stdout[-3000:]
    bad = subprocess.run(["bash", script, "--phase", "cifar10"], capture_output=True, text=True, env=env, cwd=REPO)
    assert bad.returncode == 2 and "--phase must be" in bad.stdout
