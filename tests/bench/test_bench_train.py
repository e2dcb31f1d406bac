"""Benchmark of one full, short training run through fastres.train.train: data preparation,
model construction, augmentation, every step, the final TTA evaluation.

    pytest tests/bench/test_bench_train.py --benchmark-enable

GPU: the fastest registered CIFAR-10 recipe for 94% (eager: train() does not compile) for one
epoch of a CIFAR-10-sized synthetic set. CPU: the fashion-cpu recipe for one epoch of a small
Fashion-MNIST-sized synthetic set, at batch 128.
Synthetic data keeps the benchmark free of downloads; the work per step is the same.
"""
import pytest

from bench_support import CUDA, measure, synthetic_imageset
from fastres.config import get_recipe, select_recipe
from fastres.train import train

if CUDA:
    CFG = select_recipe("cifar10", 0.94).config.replace(epochs=1, compile=False, eval_every=0)
    DATA = dict(n_train=50_000, n_test=10_000, size=32, channels=3)
    ROUNDS = dict(rounds=3, warmup=1)
else:
    CFG = get_recipe("fashion-cpu").config.replace(epochs=1, batch_size=128, eval_every=0)
    DATA = dict(n_train=1024, n_test=256, size=28, channels=1)
    ROUNDS = dict(rounds=5, warmup=1)


@pytest.mark.benchmark(group="train")
def test_short_training_run(benchmark):
    ds = synthetic_imageset(**DATA)
    result = measure(benchmark, lambda: train(CFG, ds), **ROUNDS, epochs=CFG.epochs,
                     arch=CFG.arch, width=CFG.width, batch=CFG.batch_size, **DATA)
    assert result.steps == DATA["n_train"] // CFG.batch_size
    assert 0 <= result.accuracy <= 1 and result.time_s > 0
