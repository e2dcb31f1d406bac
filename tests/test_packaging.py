"""fastres and fastres.kernels import after a regular `pip install .` (not only editable)."""
import subprocess
import sys
from pathlib import Path

import pytest

import fastres
import fastres.kernels

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_maps_kernels_folder():
    # In this checkout (pip install -e .) fastres.kernels is the top-level kernels/ folder.
    assert Path(fastres.kernels.__file__).resolve().parent == REPO / "kernels"
    assert Path(fastres.__file__).resolve().parent == REPO / "fastres"


@pytest.mark.slow
def test_regular_install_contains_every_subpackage(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = ("import fastres, fastres.kernels, fastres.data, fastres.cli; "
            "print(fastres.__file__); print(fastres.kernels.BatchNormAct2d.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    installed, module = out.stdout.split()
    assert installed.startswith(str(target)) and module == "fastres.kernels.bn_act_layer"
    assert (target / "fastres" / "kernels" / "bn_act_kernels.py").is_file()
