"""Training on the real data sets, on CPU, inside the suite.

Thresholds come from measurements on the 2-core CPU machines (2026-11-27, torch 2.13, 1 thread
under load): Fashion-MNIST, airbench width 0.25, 2 epochs -> 91.2% test accuracy in ~31 s;
CIFAR-10, same net, 1 epoch on the first 20k images -> 58.6% in ~12 s (chance is 10%).
The data checks themselves (shapes, class counts, channel means) are in test_data.py.
"""
import pytest

from fastres.config import get_recipe
from fastres.data import load_dataset
from fastres.errors import FastresError
from fastres.runner import subset
from fastres.train import train


def real(name: str):
    try:
        return load_dataset(name, download=False)
    except FastresError as e:
        pytest.skip(f"real {name} not available here ({e}); .ci/run installs it")


@pytest.mark.slow
def test_fashion_mnist_trains_to_88_percent_on_cpu():
    cfg = get_recipe("fashion-cpu").config.replace(epochs=2, eval_every=0, seed=0)
    result = train(cfg, real("fashion-mnist"))
    assert result.accuracy >= 0.88, result


@pytest.mark.slow
def test_cifar10_clearly_learns_in_one_short_epoch():
    cfg = get_recipe("fashion-cpu").config.replace(dataset="cifar10", epochs=1, crop_pad=2, flip="alternating",
                                                   eval_every=0, seed=0)
    result = train(cfg, subset(real("cifar10"), 20000, 0))
    assert result.accuracy >= 0.50, result
