"""Benchmarks of the fused BatchNorm + activation op (kernels/), forward and backward.

    pytest tests/bench/test_bench_kernels.py -m gpu --benchmark-enable     # CUDA, recipe layers

On a GPU: ResNet-9's largest BN layer (batch 512, 64 channels at 32x32, fp16, CELU, frozen
scale) with whole-batch and ghost (32) statistics. Without CUDA those skip and a tiny shape
runs through Triton's interpreter instead (TRITON_INTERPRET=1, set by tests/conftest.py): the
same benchmark code, checked for plumbing only — interpreter timings mean nothing.
bench/kernels.py is the detailed per-layer GB/s comparison; this is the regression check.
"""
import pytest
import torch

from bench_support import CUDA, DEVICE, DTYPE, measure, needs_cuda
from fastres.kernels import bn_act_op

ALPHA, EPS = 0.3, 1e-5


def bn_act_case(benchmark, shape, phase, ghost, act="celu", **timing):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(DEVICE, DTYPE).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.ones(c, device=DEVICE)                    # frozen scale, as the recipes train
    bias = torch.zeros(c, device=DEVICE, requires_grad=True)
    dy = torch.randn(shape, generator=g).to(DEVICE, DTYPE).contiguous(memory_format=torch.channels_last)

    def forward():
        return bn_act_op.bn_act_train(x, weight, bias, EPS, act, ALPHA, ghost)[0]

    info = dict(shape=list(shape), ghost_batch=ghost, act=act, phase=phase,
                mbytes=x.numel() * x.element_size() / 2**20)
    if phase == "forward":
        y = measure(benchmark, forward, **info, **timing)
        assert y.shape == x.shape and torch.isfinite(y).all()
    else:
        dx, db = measure(benchmark, lambda y: torch.autograd.grad(y, (x, bias), dy),
                         setup=lambda: (forward(),), **info, **timing)
        assert dx.shape == x.shape and db.shape == (c,) and torch.isfinite(dx).all()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.benchmark(group="bn-act")
@pytest.mark.parametrize("ghost", [0, 32])
@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_bn_act_fused(benchmark, phase, ghost):
    bn_act_case(benchmark, (512, 64, 32, 32), phase, ghost)


@pytest.mark.skipif(CUDA, reason="the interpreter smoke is for machines without CUDA")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")      # numpy, inside Triton's interpreter
@pytest.mark.benchmark(group="bn-act-interpreter")
@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_bn_act_interpreter_smoke(benchmark, phase):
    bn_act_case(benchmark, (4, 16, 3, 3), phase, ghost=2, rounds=3, warmup=1)
