"""Install fastres:  pip install .   or   pip install -e ".[test]"

The Triton kernels live in the top-level kernels/ folder and are installed as the
subpackage fastres.kernels (package_dir maps it), so both regular and editable installs
import them the same way. pyproject.toml names setuptools >= 64 as the build backend, so an
editable install is a PEP 660 one that honours the mapping: without it an older pip falls back
to `setup.py develop`, which puts the checkout on sys.path and leaves fastres.kernels missing.
"""
from setuptools import find_packages, setup

setup(
    name="fastres",
    version="0.1.0",
    description="Speed-optimised ResNet trainer: CIFAR-10 to 94% in seconds, time-to-accuracy measured honestly",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["fastres", "fastres.kernels"] + [f"fastres.{p}" for p in find_packages("fastres")],
    package_dir={"fastres": "fastres", "fastres.kernels": "kernels"},
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "test": ["pytest", "pytest-benchmark"],
        "plot": ["matplotlib"],
    },
    entry_points={"console_scripts": ["fastres=fastres.__main__:run"]},
)
