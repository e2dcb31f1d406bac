"""fastres: a speed-optimised ResNet trainer that reports honest time-to-accuracy.

Data flows one way through the modules:
    data/ (files -> uint8 tensors -> device tensors) -> augment.py (batched, on device)
    -> model.py (+ kernels/, installed as fastres.kernels) -> train.py (the training loop,
    timed) -> evaluate.py (TTA) -> runner.py / report.py (seeds, statistics, files)
config.py holds the one Config dataclass, recipes.py the named recipes, and cli.py derives the
flags from Config; study.py / studies.py and distributed.py build on runner.py.
"""
import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

# setup.py installs the top-level kernels/ folder as fastres.kernels. Imported straight from a
# checkout (PYTHONPATH, a bench/ script, a second clone beside an editable install), map
# fastres.kernels to *this* checkout's kernels/ in the same way, ahead of any installed copy:
# otherwise it would silently come from whichever checkout was installed.
_KERNELS = Path(__file__).resolve().parent.parent / "kernels"


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "fastres.kernels":
            return None
        return importlib.util.spec_from_file_location(
            name, _KERNELS / "__init__.py", submodule_search_locations=[str(_KERNELS)])


if (_KERNELS / "__init__.py").is_file() and not (Path(__file__).parent / "kernels").exists():
    sys.meta_path.insert(0, _CheckoutKernels())
