"""A bench/ script imports the fastres (and fastres.kernels) of the checkout it lives in.

Before 2026-12-04 `python bench/kernels.py` took fastres from whichever checkout was installed
(pip install -e maps fastres.kernels to that checkout's kernels/), so a second clone benchmarked
the first one's kernels without a word."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if "fastres" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_checkout_is_put_on_the_path_before_fastres_is_imported(script):
    text = (ROOT / "bench" / script).read_text()
    first_import = re.search(r"^(from|import) fastres", text, re.M)
    insert = text.find("sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))")
    assert first_import and 0 <= insert < first_import.start(), script


def test_a_copied_checkout_runs_its_own_fastres_and_kernels(tmp_path):
    copy = tmp_path / "checkout"
    for folder in ("fastres", "kernels", "bench"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns(
            "__pycache__", "results", "baselines"))
    script = copy / "bench" / "kernels.py"
    # As `python bench/kernels.py --help` would run it: the script's folder first on sys.path.
    probe = (f"import runpy, sys\nsys.path.insert(0, {str(script.parent)!r})\n"
             f"sys.argv = [{str(script)!r}, '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "for name in ('fastres', 'fastres.kernels', 'fastres.kernels.bn_act_op'):\n"
             "    print('MODULE', name, sys.modules[name].__file__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = dict(line.split()[1:] for line in out.stdout.splitlines() if line.startswith("MODULE "))
    assert len(files) == 3, out.stdout[-2000:]
    for name, path in files.items():
        assert Path(path).resolve().is_relative_to(copy.resolve()), (name, path)
