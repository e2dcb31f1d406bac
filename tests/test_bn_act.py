"""Fused BatchNorm + activation (kernels/bn_act_*.py) against the fp32 PyTorch reference.

    OMP_NUM_THREADS=1 pytest tests/test_bn_act.py            # CPU: Triton interpreter, small shapes
    pytest tests/test_bn_act.py -m gpu                        # CUDA: the same checks at real sizes

On CPU the kernels run under TRITON_INTERPRET=1 (tests/conftest.py sets it before import), so
shapes stay small but ragged: M not a multiple of the block, C = 40, batch 1 and 3, H = W = 1.
Every fused run asserts that the reference path was NOT taken, so a silent fallback fails.
"""
import copy
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import triton
import triton.language as tl

from fastres.kernels import bn_act_kernels as K
from fastres.kernels import bn_act_layer, bn_act_op
from fastres.kernels.bn_act_layer import ACTIVATIONS, BatchNormAct2d, activation, bn_act_reference
from helpers import load_bench

# The interpreter converts 1-element arrays to loop bounds; numpy 1.25+ warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")
CUDA = torch.cuda.is_available()
COMPILE_BACKEND = "inductor"
DEVICE = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
# (atol, rtol) of fp16 outputs vs the fp32 reference: fp16 rounding of y and dx; fp32: sums order;
# bf16: its 8-bit significand rounds 8x coarser than fp16's 11 bits (a half ulp is <= 2^-8 relative).
TOL = {torch.float16: (2e-3, 1e-2), torch.float32: (2e-5, 1e-4), torch.bfloat16: (1.6e-2, 1e-2)}


_reference_allowed = [True]


@pytest.fixture
def fused_only(monkeypatch):
    """Make the reference path raise unless `run` calls a backend="reference" twin: a test
    using this fixture proves the Triton op ran rather than a silent fallback."""
    def guarded(*args, **kwargs):
        assert _reference_allowed[0], "BatchNormAct2d fell back to the reference path"
        return bn_act_reference(*args, **kwargs)
    monkeypatch.setattr(bn_act_layer, "bn_act_reference", guarded)
    _reference_allowed[0] = False
    yield
    _reference_allowed[0] = True


def close(actual, expected, dtype, what=""):
    atol, rtol = TOL[dtype]
    scale = max(1.0, expected.abs().max().item())      # sums over M rows grow with M
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol * scale, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


def make_input(shape, dtype, mean=0.5, std=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * std + mean
    return x.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)


def make_pair(c, act="celu", ghost=0, freeze=False, alpha=0.3, seed=1):
    """A fused module and its reference twin with identical non-trivial parameters/buffers."""
    torch.manual_seed(seed)
    bn = BatchNormAct2d(c, act=act, alpha=alpha, ghost_batch=ghost, freeze_scale=freeze).to(DEVICE)
    with torch.no_grad():
        if not freeze:
            bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    ref = copy.deepcopy(bn)
    bn.backend, ref.backend = "triton", "reference"
    return bn, ref


def run(bn, x, dy):
    x = x.detach().clone().requires_grad_()
    allowed, _reference_allowed[0] = _reference_allowed[0], bn.backend == "reference"
    try:
        y = bn(x)
    finally:
        _reference_allowed[0] = allowed
    y.backward(dy.to(y.dtype))
    grads = {n: p.grad for n, p in bn.named_parameters()}
    return y, x.grad, grads


def check_against_reference(shape, dtype, act, ghost=0, freeze=False, training=True, x=None):
    x = make_input(shape, dtype) if x is None else x
    bn, ref = make_pair(shape[1], act, ghost, freeze)
    bn.train(training), ref.train(training)
    dy = make_input(shape, dtype, mean=0.0, std=1.0, seed=2)
    y_ref, dx_ref, g_ref = run(ref, x.float(), dy.float())
    y, dx, g = run(bn, x, dy)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    close(y, y_ref, dtype, "y")
    close(dx, dx_ref, dtype, "dx")
    close(g["bias"], g_ref["bias"], torch.float32, "dbeta")
    if freeze:
        assert g["weight"] is None and g_ref["weight"] is None
    else:
        close(g["weight"], g_ref["weight"], torch.float32, "dgamma")
    close(bn.running_mean, ref.running_mean, torch.float32, "running_mean")
    close(bn.running_var, ref.running_var, torch.float32, "running_var")
    assert torch.equal(bn.num_batches_tracked, ref.num_batches_tracked)


# M = N*H*W: 250 (ragged vs BLOCK_M 32, C = 40 ragged vs BLOCK_C), 36 (batch 1), 3 (batch 3, H = W = 1),
# 512 with C = 96 (two channel blocks, several slabs and tiles per slab).
SHAPES = [(2, 40, 5, 25), (1, 16, 6, 6), (3, 24, 1, 1), (8, 96, 8, 8)]


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_train_matches_reference(fused_only, shape, dtype, act):
    check_against_reference(shape, dtype, act)


# bf16 activations (a module in a bf16 net): the kernels load any float type and compute in fp32,
# so only the output's rounding differs from fp16. Training with every activation on a ragged
# shape and one of several channel blocks and slabs; eval; ghost groups with a frozen scale.
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(2, 40, 5, 25), (8, 96, 8, 8)], ids=lambda s: "x".join(map(str, s)))
def test_bf16_matches_reference(fused_only, shape, act):
    check_against_reference(shape, torch.bfloat16, act)


def test_bf16_eval_and_ghost_groups_match_reference(fused_only):
    check_against_reference((2, 40, 5, 25), torch.bfloat16, "gelu", training=False)
    check_against_reference((6, 40, 3, 5), torch.bfloat16, "celu", ghost=4, freeze=True)


@pytest.mark.parametrize("act", ["celu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("shape", [(2, 40, 5, 25), (1, 16, 1, 1)], ids=["ragged", "1x16x1x1"])
def test_eval_matches_reference(fused_only, shape, dtype, act):
    check_against_reference(shape, dtype, act, training=False)


# N = 6 in groups of 2 (3 groups), of 4 (a short last group of 2) and of 1 image (H*W rows each).
@pytest.mark.parametrize("ghost", [1, 2, 4])
@pytest.mark.parametrize("freeze", [False, True], ids=["gamma", "frozen"])
def test_ghost_batch(fused_only, ghost, freeze):
    check_against_reference((6, 40, 3, 5), torch.float16, "celu", ghost=ghost, freeze=freeze)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_frozen_scale(fused_only, dtype):
    check_against_reference((2, 40, 5, 25), dtype, "relu", freeze=True)


@pytest.mark.parametrize("ghost", [0, 2])
def test_half_parameters(fused_only, ghost):
    """A module converted with .half() (fp16 weight, bias and buffers) against its fp32 twin."""
    x = make_input((4, 40, 3, 5), torch.float16)
    dy = make_input((4, 40, 3, 5), torch.float16, seed=2)
    bn, ref = make_pair(40, "silu", ghost=ghost)
    y_ref, dx_ref, g_ref = run(ref, x.float(), dy.float())
    y, dx, g = run(bn.half(), x, dy)
    close(y, y_ref, torch.float16, "y")
    close(dx, dx_ref, torch.float16, "dx")
    for name in ("weight", "bias"):
        assert g[name].dtype == torch.float16
        close(g[name], g_ref[name], torch.float16, name)
    close(bn.running_var, ref.running_var, torch.float16, "running_var")


@pytest.fixture(params=[0, 1], ids=["per-tile", "acc2d"])
def acc2d(request, monkeypatch):
    """Both reduction strategies (GPU_TUNING's acc2d knob, used by the interpreter too)."""
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "acc2d", request.param)
    x = torch.zeros(2, 8, 2, 2, device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert bn_act_op._launch(x, 1, 2)[2]["TWO_D"] is bool(request.param)
    return request.param


# The element-wise (acc2d) reductions on the shapes above, ghost groups (a short last group
# leaves an empty slab in the interpreter's geometry) and frozen scales, with software-pipelined
# row loops (stages=3; the interpreter runs them as plain loops, a GPU pipelines them).
@pytest.mark.parametrize("case", [
    dict(shape=(2, 40, 5, 25), dtype=torch.float16, act="gelu"),
    dict(shape=(2, 40, 5, 25), dtype=torch.float32, act="celu"),
    dict(shape=(3, 24, 1, 1), dtype=torch.float32, act="silu"),
    dict(shape=(8, 96, 8, 8), dtype=torch.float16, act="relu", freeze=True),
    dict(shape=(6, 40, 3, 5), dtype=torch.float16, act="celu", ghost=4),
    dict(shape=(6, 40, 3, 5), dtype=torch.float32, act="identity", ghost=1, freeze=True),
], ids=lambda c: f"{'x'.join(map(str, c['shape']))}-{c['act']}-g{c.get('ghost', 0)}")
def test_acc2d_pipelined_matches_reference(fused_only, monkeypatch, case):
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "acc2d", 1)
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "stages", 3)
    x = torch.zeros(case["shape"], device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert bn_act_op._launch(x, 1, case["shape"][0])[2]["STAGES"] == 3
    check_against_reference(**case)


# Narrower finalize tiles (finalize_c): C = 40 in three finalize programs, the last one ragged,
# with and without ghost groups; with acc2d too (the sweep's second stage starts from its best).
@pytest.mark.parametrize("case", [
    dict(shape=(2, 40, 5, 25), dtype=torch.float32, act="gelu"),
    dict(shape=(6, 40, 3, 5), dtype=torch.float16, act="celu", ghost=4),
    dict(shape=(8, 96, 8, 8), dtype=torch.float16, act="silu", freeze=True),
], ids=lambda c: f"{'x'.join(map(str, c['shape']))}-g{c.get('ghost', 0)}")
@pytest.mark.parametrize("acc", [0, 1], ids=["per-tile", "acc2d"])
def test_narrow_finalize_matches_reference(fused_only, monkeypatch, case, acc):
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "finalize_c", 16)
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "acc2d", acc)
    x = torch.zeros(case["shape"], device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert bn_act_op._launch(x, 1, case["shape"][0])[2]["BLOCK_CF"] == 16
    check_against_reference(**case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_shifted_input_is_accurate(fused_only, acc2d, dtype):
    """mean 300, std 1: sum/sum-of-squares statistics lose ~10% of the variance here; the
    per-tile centred M2 merged with Chan's formula, and the sums around a pivot sample
    (acc2d), must match a float64 computation."""
    x = make_input((4, 32, 8, 8), dtype, mean=300.0, std=1.0)
    bn, _ = make_pair(32, "identity")
    bn.momentum = 1.0                                   # running stats = this batch's stats
    y = bn(x)
    x64 = x.double().permute(1, 0, 2, 3).reshape(32, -1)
    var64 = x64.var(1, unbiased=False)
    y64 = ((x64 - x64.mean(1, keepdim=True)) * torch.rsqrt(var64[:, None] + bn.eps))
    y64 = y64 * bn.weight.double()[:, None] + bn.bias.double()[:, None]
    close(y.permute(1, 0, 2, 3).reshape(32, -1), y64, dtype, "y")
    torch.testing.assert_close(bn.running_var.double(), x64.var(1, unbiased=True), rtol=1e-4, atol=0)
    torch.testing.assert_close(bn.running_mean.double(), x64.mean(1), rtol=1e-6, atol=0)


def test_repeated_calls_are_bit_identical(fused_only, acc2d):
    x = make_input((8, 96, 8, 8), torch.float16)
    dy = make_input((8, 96, 8, 8), torch.float16, seed=3)
    results = []
    for _ in range(2):
        bn, _ = make_pair(96, "silu", ghost=4)
        y, dx, g = run(bn, x, dy)
        results.append([y, dx, g["weight"], g["bias"], bn.running_mean, bn.running_var])
    for a, b in zip(*results):
        assert torch.equal(a, b)


class _NotLaunched:
    """Stands in for a kernel that must not be launched."""

    def __getitem__(self, grid):
        raise AssertionError("a finalize kernel was launched")


# The fused finalize (fuse_finalize=1) against the finalize kernels: in the interpreter (sequential
# programs, numpy arithmetic) the same bits for every output, in training (two channel blocks; ghost groups with a short last group, frozen scale)
# and eval mode (the backward's sums over running statistics), with one and with several
# finalize tiles per channel block (finalize_c 16 at BLOCK_C 64: the last tile past C = 40).
@pytest.mark.parametrize("case", [
    dict(shape=(8, 96, 8, 8), act="silu"),
    dict(shape=(6, 40, 3, 5), act="celu", ghost=4, freeze=True),
    dict(shape=(2, 40, 5, 25), act="gelu", training=False),
], ids=lambda c: f"{'x'.join(map(str, c['shape']))}-g{c.get('ghost', 0)}{'-eval' if 'training' in c else ''}")
@pytest.mark.parametrize("finalize_c", [32, 16])
def test_fused_finalize_gives_the_finalize_kernels_bits(fused_only, monkeypatch, case, finalize_c):
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "finalize_c", finalize_c)
    # Work buffers full of NaN: a finalize that read a partial before it was written would show.
    monkeypatch.setattr(bn_act_op, "_scratch", lambda x, *shape: x.new_full(shape, float("nan"),
                                                                            dtype=torch.float32))
    x = make_input(case["shape"], torch.float16)
    dy = make_input(case["shape"], torch.float16, seed=3)
    results = []
    for fuse, counters in ((0, bn_act_op.COUNTERS), (1, bn_act_op.COUNTERS), (1, 0)):
        with monkeypatch.context() as m:
            m.setitem(bn_act_op.GPU_TUNING, "fuse_finalize", fuse)
            m.setattr(bn_act_op, "COUNTERS", counters)    # 0: too few counters, the kernels run
            if fuse and counters:
                m.setattr(bn_act_op.K, "bn_finalize_kernel", _NotLaunched())
                m.setattr(bn_act_op.K, "bn_bwd_finalize_kernel", _NotLaunched())
            bn, _ = make_pair(case["shape"][1], case["act"], case.get("ghost", 0), case.get("freeze", False))
            bn.train(case.get("training", True))
            y, dx, g = run(bn, x, dy)
        results.append([y, dx, g["bias"], bn.running_mean, bn.running_var]
                       + ([] if case.get("freeze") else [g["weight"]]))
    for unfused, fused, fallback in zip(*results):
        assert torch.equal(unfused, fallback)
        if CUDA:    # compiled into another kernel, a tile's sum may be laid out differently
            close(fused, unfused, fused.dtype)
        else:
            assert torch.equal(unfused, fused)
    assert not bn_act_op._COUNTERS[x.device].any()      # every launch left its counters at zero


@pytest.mark.parametrize("case", [
    dict(shape=(8, 96, 8, 8), act="gelu"),                                 # 8 slabs x 2 channel blocks
    dict(shape=(6, 40, 3, 5), act="celu", ghost=4, freeze=True),           # a short last ghost group
    dict(shape=(2, 40, 5, 25), act="silu", training=False),                # eval: dx over running stats
], ids=lambda c: f"{'x'.join(map(str, c['shape']))}-g{c.get('ghost', 0)}{'-eval' if 'training' in c else ''}")
@pytest.mark.parametrize("knobs", [dict(reverse=1), dict(pass2_per_sm=1), dict(pass2_per_sm=24, reverse=1)],
                         ids=lambda k: ",".join(f"{n}={v}" for n, v in k.items()))
def test_second_pass_order_and_split_give_the_same_bits(fused_only, monkeypatch, case, knobs):
    """The second pass (apply, dx) in reverse grid order (reverse=1: programs take their places
    from the grid's end) or split into its own slabs (pass2_per_sm; in the interpreter, whose
    "SM count" is 1, the number of programs): every output bit-identical to the defaults, each
    element computed the same way by another program. Outputs start as NaN, so a row that no
    program wrote would show."""
    monkeypatch.setattr(bn_act_op, "_empty_cl", lambda x, dtype=None: torch.full_like(
        x, float("nan"), dtype=dtype, memory_format=torch.channels_last))
    record_launches = load_bench("kernels").record_launches
    x = make_input(case["shape"], torch.float16)
    dy = make_input(case["shape"], torch.float16, seed=3)
    results = []
    for tuning in ({}, knobs):
        with monkeypatch.context() as m:
            m.setattr(bn_act_op, "GPU_TUNING", {**bn_act_op.GPU_TUNING, **tuning})
            bn, _ = make_pair(case["shape"][1], case["act"], case.get("ghost", 0), case.get("freeze", False))
            bn.train(case.get("training", True))
            out = []
            calls = record_launches(lambda: out.append(run(bn, x, dy)))
            y, dx, g = out[0]
        assert not (y.isnan().any() or dx.isnan().any())
        results.append([y, dx, g["bias"], bn.running_mean, bn.running_var]
                       + ([] if case.get("freeze") else [g["weight"]]))
    for default, changed in zip(*results):
        assert torch.equal(default, changed)
    second = [(grid, kw["REVERSE"]) for name, _, grid, _, kw, _ in calls
              if name in ("bn_apply_kernel", "bn_bwd_dx_kernel")]
    first = [grid for name, _, grid, *_ in calls if name in ("bn_stats_kernel", "bn_bwd_reduce_kernel")]
    # Reversed where there is a first pass to follow: training apply and every dx, not eval's apply.
    training = case.get("training", True)
    assert [r for _, r in second] == [training and "reverse" in knobs, "reverse" in knobs]
    groups = -(-case["shape"][0] // case.get("ghost", 0)) if case.get("ghost") else 1
    for grid, _ in second:
        assert grid[1] == first[-1][1] and grid[1] == -(-case["shape"][1] // 64)   # channel blocks
        if knobs.get("pass2_per_sm") == 1:      # one slab per group, where the reductions have several
            assert grid[0] == groups < first[-1][0]
        elif "pass2_per_sm" in knobs:
            assert grid[0] >= first[-1][0]
        else:
            assert grid[0] == first[-1][0] and grid[0] * grid[1] > 1        # more than one program to reorder


def test_l2_model_matches_the_lru_closed_forms():
    """bench/l2_model.py (the reverse knob's prediction) against the closed forms of an LRU cache
    of L MB with tensors of B MB: the backward's dx hits min(1, L / 3B) reversed and nothing in
    grid order once 2B > L; apply hits (L - B) / B in grid order and L / 2B reversed for
    L / 2 < B < L; a layer that fits with its output hits everywhere."""
    model = load_bench("l2_model")
    hits = model.second_pass_hits
    for L, B in ((50, 28.1), (50, 42.2), (40, 24.5)):
        assert hits(L, B, backward=True, reverse=True) == pytest.approx(min(1, L / (3 * B)), abs=0.01)
        assert hits(L, B, backward=True, reverse=False) == 0
    for L, B in ((50, 28.1), (50, 36.8)):
        assert hits(L, B, backward=False, reverse=False) == pytest.approx((L - B) / B, abs=0.01)
        assert hits(L, B, backward=False, reverse=True) == pytest.approx(L / (2 * B), abs=0.01)
    assert all(hits(50, 4.5, b, r) == 1 for b in (False, True) for r in (False, True))


def test_non_channels_last_input_and_grad(fused_only):
    """NCHW-contiguous x and a strided (non-channels-last) dy: copied, never misread."""
    x = make_input((2, 40, 5, 3), torch.float32).contiguous()
    assert not x.is_contiguous(memory_format=torch.channels_last)
    dy = make_input((2, 40, 5, 3), torch.float32, seed=2).transpose(2, 3).contiguous().transpose(2, 3)
    bn, ref = make_pair(40, "gelu")
    y_ref, dx_ref, g_ref = run(ref, x, dy)
    y, dx, g = run(bn, x, dy)
    assert y.is_contiguous(memory_format=torch.channels_last)
    close(y, y_ref, torch.float32, "y")
    close(dx, dx_ref, torch.float32, "dx")
    close(g["weight"], g_ref["weight"], torch.float32, "dgamma")


def test_strided_parameter_and_statistics_vectors_are_not_misread(fused_only):
    """weight, bias and running statistics that are strided views (a column of a larger tensor):
    the kernels index them as contiguous vectors, so the ops copy them first."""
    x = make_input((2, 40, 3, 5), torch.float32)
    dy = make_input((2, 40, 3, 5), torch.float32, seed=2)
    gen = torch.Generator().manual_seed(4)
    w, b, stats = (torch.rand(40, 2, generator=gen).to(DEVICE) for _ in range(3))
    w, b, rm, rv = w[:, 0] + 0.5, b[:, 1] - 0.5, (stats - 0.5)[:, 0], (stats + 0.5)[:, 1]
    assert not rm.is_contiguous() and not rv.is_contiguous()
    for training in (True, False):
        big_w, big_b = torch.stack([w, w], 1).requires_grad_(), torch.stack([b, b], 1).requires_grad_()
        ws, bs = big_w[:, 0], big_b[:, 1]
        assert not ws.is_contiguous() and not bs.is_contiguous()
        xg = x.detach().requires_grad_()
        if training:
            y = bn_act_op.fused_train(xg, ws, bs, 1e-5, "celu", 0.3, 0)[0]
        else:
            y = bn_act_op.fused_eval(xg, ws, bs, rm, rv, 1e-5, "celu", 0.3)
        dx, dw, db = torch.autograd.grad(y, (xg, big_w, big_b), dy)
        xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
        yr = F.celu(F.batch_norm(xr, rm.clone(), rv.clone(), wr, br, training, 0.1, 1e-5), 0.3)
        dxr, dwr, dbr = torch.autograd.grad(yr, (xr, wr, br), dy)
        what = "train" if training else "eval"
        close(y, yr, torch.float32, f"y ({what})")
        close(dx, dxr, torch.float32, f"dx ({what})")
        close(dw[:, 0], dwr, torch.float32, f"dgamma ({what})")
        close(db[:, 1], dbr, torch.float32, f"dbeta ({what})")


def test_double_backward_raises_instead_of_dropping_the_second_order_terms(fused_only):
    """The fused backward is not differentiable: a gradient penalty through it must fail
    loudly (as the custom ops do), not silently treat dx as a constant."""
    x = make_input((2, 8, 3, 3), torch.float32).requires_grad_()
    dy = make_input((2, 8, 3, 3), torch.float32, seed=2)
    bn, _ = make_pair(8, "celu")
    y = bn(x)
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        torch.autograd.grad((dx * dx).sum() + y.sum(), x)    # y: a path that is differentiable


@pytest.mark.parametrize("ghost", [0, 2])
def test_reference_path_of_a_half_module(ghost):
    """The PyTorch path (CPU, or use_reference(True)) of a module converted with .half(), as
    the fused path supports (test_half_parameters): fp16 running statistics."""
    x = make_input((4, 8, 3, 5), torch.float16)
    bn = BatchNormAct2d(8, act="silu", ghost_batch=ghost, momentum=0.5).to(DEVICE)
    bn.backend = "reference"
    ref = copy.deepcopy(bn)
    y_ref = ref(x.float())
    y = bn.half()(x)
    assert y.dtype == torch.float16 and bn.running_mean.dtype == torch.float16
    close(y, y_ref, torch.float16, "y")
    close(bn.running_mean, ref.running_mean, torch.float16, "running_mean")
    close(bn.running_var, ref.running_var, torch.float16, "running_var")
    bn.eval(), ref.eval()
    close(bn(x), ref(x.float()), torch.float16, "eval")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_empty_batch_as_batchnorm2d(fused_only, training):
    """An empty batch (N = 0) gives an empty output and leaves the running statistics alone,
    as nn.BatchNorm2d does (the launch geometry divided by zero)."""
    bn, _ = make_pair(8, "gelu", ghost=2)
    bn.train(training)
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.zeros(0, 8, 3, 3, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    allowed, _reference_allowed[0] = _reference_allowed[0], True
    try:
        y = bn(x)
    finally:
        _reference_allowed[0] = allowed
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(bn.running_mean, rm) and torch.equal(bn.running_var, rv)
    assert int(bn.num_batches_tracked) == int(training)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_ghost_group_of_one_value_per_channel_is_refused(backend):
    """A ghost group with one value per channel (one 1x1 image: N = 5 in groups of 2, or groups
    of 1) would output the bias with a zero gradient and pull running_var towards 0: refused, as
    nn.BatchNorm2d refuses such a batch. Groups of >= 2 values still train."""
    for n, ghost in ((5, 2), (3, 1)):
        bn = BatchNormAct2d(8, ghost_batch=ghost).to(DEVICE)
        bn.backend = backend
        with pytest.raises(ValueError, match="more than 1 value per channel in each ghost batch group"):
            bn(make_input((n, 8, 1, 1), torch.float32))
    bn = BatchNormAct2d(8, ghost_batch=2).to(DEVICE)
    bn.backend = backend
    assert bn(make_input((4, 8, 1, 1), torch.float32)).shape == (4, 8, 1, 1)


def test_reference_helpers_agree_with_pytorch():
    """The whole-batch reference against nn.BatchNorm2d + activation (the ghost reference:
    test_ghost_reference_is_batch_norm_per_group)."""
    x = make_input((4, 8, 3, 3), torch.float32)
    w, b = torch.rand(8, device=DEVICE) + 0.5, torch.randn(8, device=DEVICE)
    bn = nn.BatchNorm2d(8).to(DEVICE).train()
    with torch.no_grad():
        bn.weight.copy_(w), bn.bias.copy_(b)
    rm, rv = torch.zeros(8, device=DEVICE), torch.ones(8, device=DEVICE)
    y = bn_act_reference(x, w, b, rm, rv, True, 0.1, 1e-5, "silu", 1.0, ghost_batch=0)
    torch.testing.assert_close(y, activation(bn(x), "silu"))
    torch.testing.assert_close(rv, bn.running_var)


@triton.jit
def _normal_cdf_probe(z_ptr, cdf_ptr, pdf_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    z = tl.load(z_ptr + offs, mask=offs < n)
    cdf, nb2 = K._normal_cdf(z)
    tl.store(cdf_ptr + offs, cdf, mask=offs < n)
    tl.store(pdf_ptr + offs, tl.exp2(nb2) * 0.3989422804014327, mask=offs < n)


def test_ghost_reference_is_batch_norm_per_group():
    """The ghost reference against PyTorch's BatchNorm2d run on each group alone (5 images in
    groups of 2: the last group is one image): each group normalised by its own statistics;
    running statistics moved by momentum towards the groups' average mean and unbiased variance."""
    x = make_input((5, 8, 3, 3), torch.float32)
    w, b = torch.rand(8, device=DEVICE) + 0.5, torch.randn(8, device=DEVICE)
    rm, rv = torch.randn(8, device=DEVICE), torch.rand(8, device=DEVICE) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    y = bn_act_reference(x, w, b, rm, rv, True, 0.4, 1e-5, "celu", 0.3, ghost_batch=2)
    ys, means, variances = [], [], []
    for chunk in x.split(2):
        bn = nn.BatchNorm2d(8, momentum=1.0).to(DEVICE).train()     # running stats = this group's
        with torch.no_grad():
            bn.weight.copy_(w), bn.bias.copy_(b)
            ys.append(F.celu(bn(chunk), 0.3))
        means.append(bn.running_mean), variances.append(bn.running_var)
    torch.testing.assert_close(y, torch.cat(ys))
    torch.testing.assert_close(rm, 0.6 * rm0 + 0.4 * torch.stack(means).mean(0))
    torch.testing.assert_close(rv, 0.6 * rv0 + 0.4 * torch.stack(variances).mean(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("ghost", [0, 2])
def test_running_statistics_update_is_one_launch(fused_only, ghost, dtype):
    """Eager, the fused path updates both running statistics with one foreach op (one kernel
    launch on a GPU, where two lerp_ are two), in the buffers' own dtype, also for a .half()
    module; the values are test_running_statistics_follow_momentum_over_steps's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))
    bn = BatchNormAct2d(8, act="gelu", ghost_batch=ghost).to(DEVICE, dtype)
    bn.backend = "triton"
    x = make_input((4, 8, 3, 3), dtype)
    with Ops() as ops:
        bn(x)
    assert ops.names.count("_foreach_lerp_") == 1 and "lerp_" not in ops.names, ops.names
    assert bn.running_mean.dtype == bn.running_var.dtype == dtype
    groups = x.float().split(ghost or len(x))
    mean = torch.stack([g.mean((0, 2, 3)) for g in groups]).mean(0)
    var = torch.stack([g.var((0, 2, 3)) for g in groups]).mean(0)
    close(bn.running_mean, 0.1 * mean, dtype, "running_mean")
    close(bn.running_var, 0.9 + 0.1 * var, dtype, "running_var")


@pytest.mark.parametrize("ghost", [0, 2])
@pytest.mark.parametrize("momentum", [0.4, None], ids=["m0.4", "cumulative"])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_running_statistics_follow_momentum_over_steps(fused_only, backend, momentum, ghost):
    """Three training steps, then eval: the running statistics move by `momentum` (None: the
    cumulative average 1/t, as nn.BatchNorm2d) towards the batch's mean and unbiased variance,
    averaged over ghost groups; eval normalises with them."""
    bn = BatchNormAct2d(8, act="identity", momentum=momentum, ghost_batch=ghost).to(DEVICE)
    bn.backend = backend
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    for t in range(1, 4):
        x = make_input((4, 8, 3, 3), torch.float32, mean=t, std=t, seed=t)
        _reference_allowed[0] = backend == "reference"
        try:
            bn(x)
        finally:
            _reference_allowed[0] = False
        groups = x.split(ghost or len(x))
        mean = torch.stack([g.mean((0, 2, 3)) for g in groups]).mean(0)
        var = torch.stack([g.var((0, 2, 3)) for g in groups]).mean(0)      # unbiased
        m = 1 / t if momentum is None else momentum
        rm, rv = (1 - m) * rm + m * mean, (1 - m) * rv + m * var
        close(bn.running_mean, rm, torch.float32, f"running_mean, step {t}")
        close(bn.running_var, rv, torch.float32, f"running_var, step {t}")
    assert int(bn.num_batches_tracked) == 3
    bn.eval()
    x = make_input((2, 8, 3, 3), torch.float32, seed=9)
    _reference_allowed[0] = backend == "reference"
    try:
        y = bn(x)
    finally:
        _reference_allowed[0] = False
    expected = (x - rm[:, None, None]) / torch.sqrt(rv[:, None, None] + bn.eps)
    close(y, expected * bn.weight[:, None, None] + bn.bias[:, None, None], torch.float32, "eval")


def test_gelu_normal_cdf_is_accurate_to_fp32():
    """GELU's Phi(z) (and the backward's phi(z), from the same exponent) against float64 erfc
    over the whole fp32 range that matters: within 5e-7 absolute (PyTorch's fp32
    0.5 * (1 + erf): 6e-8), and in the negative tail accurate relative to Phi itself, where
    PyTorch's formula cancels (its relative error reaches 1 there)."""
    z = torch.linspace(-12, 12, 48001, dtype=torch.float32, device=DEVICE)
    cdf, pdf = torch.empty_like(z), torch.empty_like(z)
    _normal_cdf_probe[(triton.cdiv(z.numel(), 1024),)](z, cdf, pdf, z.numel(), BLOCK=1024)
    z64 = z.double().cpu()
    exact = torch.tensor([0.5 * math.erfc(-v / math.sqrt(2)) for v in z64.tolist()], dtype=torch.float64)
    err = (cdf.double().cpu() - exact).abs()
    assert err.max() < 5e-7
    tail = z64 < 0
    assert (err / exact)[tail].max() < 1e-4
    torch_err = (0.5 * (1 + torch.erf(z.cpu() * 0.7071067811865476))).double() - exact
    assert (torch_err.abs() / exact)[tail].max() > 0.5          # what the tail test guards against
    pdf64 = torch.exp(-z64 * z64 / 2) / math.sqrt(2 * math.pi)
    near = z64.abs() < 9
    assert ((pdf.double().cpu() - pdf64).abs() / pdf64)[near].max() < 2e-5


@triton.jit
def _sigmoid_exp_probe(z_ptr, sig_ptr, exp_ptr, n, alpha, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    z = tl.load(z_ptr + offs, mask=offs < n)
    tl.store(sig_ptr + offs, K._sigmoid(z), mask=offs < n)
    tl.store(exp_ptr + offs, K._exp_over(z, alpha), mask=offs < n)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")   # exp(120): inf, on purpose
def test_silu_sigmoid_and_celu_exp_are_accurate_to_fp32():
    """SiLU's sigmoid (reciprocal as rsqrt(d)^2) and CELU's exp(min(z, 0) / alpha) (as exp2)
    against float64, from far below fp32's range to far above it: relative error at fp32
    rounding wherever the value is a normal fp32 number, 0 below it, no NaN or inf."""
    z = torch.linspace(-120, 120, 24001, dtype=torch.float32, device=DEVICE)
    sig, ex = torch.empty_like(z), torch.empty_like(z)
    _sigmoid_exp_probe[(triton.cdiv(z.numel(), 1024),)](z, sig, ex, z.numel(), 0.3, BLOCK=1024)
    z64, sig, ex = z.double().cpu(), sig.double().cpu(), ex.double().cpu()
    assert torch.isfinite(sig).all() and torch.isfinite(ex).all()
    for got, want in ((sig, torch.sigmoid(z64)), (ex, torch.exp(z64.clamp(max=0) / 0.3))):
        normal = want > torch.finfo(torch.float32).tiny * 4
        assert ((got - want).abs() / want)[normal].max() < 1e-5
        assert (got[~normal] <= torch.finfo(torch.float32).tiny * 4).all()


@gpu
@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_gpu_activation_math_is_accurate_to_fp32():
    """The two checks above compiled for the GPU, whose rsqrt and exp2 are approximate."""
    test_gelu_normal_cdf_is_accurate_to_fp32()
    test_silu_sigmoid_and_celu_exp_are_accurate_to_fp32()


def test_state_dict_compatible_with_batchnorm2d():
    plain = nn.BatchNorm2d(40)
    fused = BatchNormAct2d(40, act="celu", freeze_scale=True)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    fused.load_state_dict(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    assert not fused.weight.requires_grad


def test_cpu_auto_backend_uses_reference():
    bn = BatchNormAct2d(8)
    assert bn.backend == "auto" and bn._fused_path(torch.zeros(2, 8, 2, 2)) is False
    bn.backend = "triton"
    assert bn._fused_path(torch.zeros(2, 8, 2, 2)) is True
    bn_act_layer.use_reference(True)
    try:
        assert bn._fused_path(torch.zeros(2, 8, 2, 2)) is False
    finally:
        bn_act_layer.use_reference(False)


def _opcheck_samples():
    x = make_input((3, 40, 3, 2), torch.float16)
    w = torch.rand(40, device=DEVICE, requires_grad=True)
    b = torch.randn(40, device=DEVICE, requires_grad=True)
    rm, rv = torch.randn(40, device=DEVICE), torch.rand(40, device=DEVICE) + 0.5
    xg = x.detach().requires_grad_()
    y, mean, rstd, _ = bn_act_op.bn_act_train(x, w, b, 1e-5, "celu", 0.3, 2)
    return [
        (bn_act_op.bn_act_train, (xg, w, b, 1e-5, "celu", 0.3, 2)),
        (bn_act_op.bn_act_train, (x.contiguous(), w, b, 1e-5, "gelu", 1.0, 0)),
        (bn_act_op.bn_act_eval, (xg, w, b, rm, rv, 1e-5, "silu", 1.0)),
        (bn_act_op.bn_act_backward, (torch.randn_like(y), x, w.detach(), b.detach(), mean, rstd,
                                     1e-5, "celu", 0.3, 2, True, False)),
    ]


@pytest.mark.parametrize("ghost,freeze", [(0, False), (2, True)])
def test_eager_entry_points_and_triton_op_twins_match_the_custom_ops(ghost, freeze):
    # BatchNormAct2d calls the implementations directly in eager mode (fused_train/fused_eval),
    # the registered custom ops under torch.compile, or with FASTRES_BN_OP=triton_op their
    # triton_op twins (torch >= 2.6; run eagerly here, Inductor traces them on a GPU only).
    # The same kernels: bit-identical results and gradients.
    x = make_input((5, 40, 3, 3), torch.float32)
    dy = make_input((5, 40, 3, 3), torch.float32, seed=3)
    w = torch.rand(40, device=DEVICE, requires_grad=not freeze)
    b = torch.randn(40, device=DEVICE, requires_grad=True)
    rm, rv = torch.randn(40, device=DEVICE), torch.rand(40, device=DEVICE) + 0.5
    twins = bn_act_op.HAS_TRITON_OP
    trains = [bn_act_op.bn_act_train, bn_act_op.fused_train] + ([bn_act_op.bn_act_train_t] if twins else [])
    evals = [bn_act_op.bn_act_eval] + ([bn_act_op.bn_act_eval_t] if twins else [])
    outs, eval_outs = [], []
    for train in trains:
        xg = x.detach().requires_grad_()
        y, mean, rstd, var = train(xg, w, b, 1e-5, "celu", 0.3, ghost)
        inputs = [t for t in (xg, w, b) if t.requires_grad]
        outs.append([y, mean, rstd, var, *torch.autograd.grad(y, inputs, dy)])
    for evaluate in evals:
        xg = x.detach().requires_grad_()
        y = evaluate(xg, w, b, rm, rv, 1e-5, "gelu", 1.0)
        eval_outs.append([y, *torch.autograd.grad(y, [t for t in (xg, w, b) if t.requires_grad], dy)])
    assert len(outs[0]) == (6 if freeze else 7) and len(outs) == (3 if twins else 2)
    assert all(torch.equal(p, q) for other in outs[1:] for p, q in zip(outs[0], other))
    assert all(torch.equal(p, q) for other in eval_outs[1:] for p, q in zip(eval_outs[0], other))
    with torch.no_grad():
        direct = bn_act_op.fused_eval(x, w, b, rm, rv, 1e-5, "gelu", 1.0)
    assert torch.equal(direct, eval_outs[0][0])


def test_opcheck():
    for op, args in _opcheck_samples():
        torch.library.opcheck(op, args)


class SmallNet(nn.Module):
    def __init__(self, act="celu", ghost=0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(16, act=act, alpha=0.3, ghost_batch=ghost, freeze_scale=True)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.bn2 = BatchNormAct2d(24, act="gelu")
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def check_compiled_net(ghost: int, shape: tuple, eval_batches: tuple, **compile_kwargs):
    """A SmallNet on the fused op compiled with fullgraph=True (no graph break) against its eager
    twin: training (forward, backward, running statistics), then eval at several batch sizes
    (a new batch size makes torch.compile trace a symbolic one: automatic dynamic shapes)."""
    torch.manual_seed(0)
    eager = SmallNet(ghost=ghost).to(DEVICE).to(memory_format=torch.channels_last)
    for m in eager.modules():
        if isinstance(m, BatchNormAct2d):
            m.backend = "triton"
    compiled = copy.deepcopy(eager)
    step = torch.compile(compiled, fullgraph=True, **compile_kwargs)
    x = make_input(shape, torch.float32)
    for fn in (eager, step):
        fn(x).square().mean().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert (p.grad is None) == (q.grad is None) == (name == "bn1.weight"), name
        if p.grad is not None:
            close(q.grad, p.grad, torch.float32, name)
    for (name, b), c in zip(eager.named_buffers(), compiled.buffers()):
        close(c.float(), b.float(), torch.float32, name)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for n in eval_batches:
            close(step(x[:n]), eager(x[:n]), torch.float32, f"eval, batch {n}")


@pytest.mark.parametrize("fuse", [0, 1], ids=["finalize-kernels", "fused-finalize"])
def test_compiled_net_matches_eager(fused_only, monkeypatch, fuse):
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "fuse_finalize", fuse)
    check_compiled_net(2, (4, 3, 6, 6), (4, 3, 2), backend=COMPILE_BACKEND)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bn_op", ["custom_op", "triton_op"])
@pytest.mark.parametrize("tuning", [{}, dict(fuse_finalize=1, stages=3)], ids=["default", "fused-pipelined"])
def test_gpu_compiled_net_matches_eager(fused_only, bn_op, tuning, monkeypatch):
    """On a GPU, at a real batch, either way torch.compile may see the fused op (FASTRES_BN_OP):
    the triton_op twins' launch geometry specialises a symbolic batch size on concrete ones.
    With fuse_finalize the triton_op twins launch the finalize kernels (no counters to trace)."""
    if bn_op == "triton_op" and not bn_act_op.HAS_TRITON_OP:
        pytest.skip("torch.library.triton_op needs torch >= 2.6")
    monkeypatch.setattr(bn_act_op, "BN_OP", bn_op)
    monkeypatch.setattr(bn_act_op, "GPU_TUNING", {**bn_act_op.GPU_TUNING, **tuning})
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)    # fp32 convs: tolerances are fp32's
    torch._dynamo.reset()
    check_compiled_net(32, (256, 3, 16, 16), (256, 200, 120))


@pytest.mark.skipif(CUDA, reason="the GPU run is the real benchmark, minutes long")
def test_bench_smoke_writes_json(tmp_path, monkeypatch):
    import json
    bench = load_bench("kernels")
    monkeypatch.setattr(bn_act_op, "GPU_TUNING", dict(bn_act_op.GPU_TUNING))   # main sets the knobs
    kernels = {n: getattr(bn_act_op.K, n) for n in dir(bn_act_op.K) if n.endswith("_kernel")}
    bench.main(["--smoke", "--ghost", "2", "--out", str(tmp_path / "bn.json")])
    result = json.loads((tmp_path / "bn.json").read_text())
    assert result["smoke"] and result["complete"] and len(result["layers"]) == 2
    assert [r["ghost"] for r in result["layers"]] == [2, 2]              # --ghost overrides the nets'
    assert set(result["layers"][0]["variants"]) == {"fused", "eager", "compiled"}
    smoke = result["summary"]["per_recipe"]["smoke"]
    fused = sum(r["count"] * r["variants"]["fused"]["both_ms"] for r in result["layers"])
    assert smoke["step_ms"]["fused"] == pytest.approx(fused)
    assert smoke["fused_vs_compiled"] == pytest.approx(smoke["step_ms"]["compiled"] / fused)
    # the fused op's forward + backward, kernel by kernel, in launch order (the finalize's grid
    # has a row of programs per ghost group: 4 images in groups of 2)
    for layer in result["layers"]:
        parts = layer["variants"]["fused"]["kernels_us"]
        assert [k["kernel"] for k in parts] == ["stats", "finalize", "apply", "bwd_reduce", "bwd_finalize", "bwd_dx"]
        assert all(k["us"] > 0 for k in parts) and parts[1]["grid"][0] == 2      # 4 images / 2 per group
    assert {n: getattr(bn_act_op.K, n) for n in kernels} == kernels            # the recorder is gone
    # With the fused finalize: four kernels, the reductions labelled with their finalize tail.
    bench.main(["--smoke", "--fuse-finalize", "1", "--out", str(tmp_path / "fused.json")])
    for layer in json.loads((tmp_path / "fused.json").read_text())["layers"]:
        assert [k["kernel"] for k in layer["variants"]["fused"]["kernels_us"]] == [
            "stats+finalize", "apply", "bwd_reduce+finalize", "bwd_dx"]


@pytest.mark.skipif(CUDA, reason="the GPU run is the real benchmark")
def test_bench_interrupted_keeps_the_finished_layers(tmp_path, monkeypatch):
    # gpu_check.sh's deadline interrupts with SIGINT: the layers measured so far are written,
    # marked incomplete, with no step total for the unfinished net.
    import json
    bench = load_bench("kernels")
    real, calls = bench.bench_layer, []

    def bench_layer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(bench, "bench_layer", bench_layer)
    result = bench.main(["--smoke", "--out", str(tmp_path / "bn.json")])
    assert json.loads((tmp_path / "bn.json").read_text()) == result
    assert not result["complete"] and len(result["layers"]) == 1
    assert result["summary"]["per_recipe"] == {} and not result["summary"]["goal_1_3x_met"]


def test_bench_layer_shapes_come_from_the_recipe_models():
    # Hand counts from the architectures: airbench whitens 32 -> 31 (2x2, no padding), then each
    # group pools before its BNs (31 -> 15 -> 7 -> 3; at 28x28, fashion-94 at half width:
    # 27 -> 13 -> 6 -> 3); ResNet-9 (half width in fashion-94-resnet9) on 28x28 Fashion-MNIST
    # pools 28 -> 14 -> 7 -> 3 and repeats its BN in the residual blocks after layers 1 and 3.
    bench = load_bench("kernels")
    assert bench.recipe_layers("cifar10-94") == (
        "cifar10-94", 1024, [(64, 15, "gelu", 0.3, 0, 2), (256, 7, "gelu", 0.3, 0, 2), (256, 3, "gelu", 0.3, 0, 2)])
    assert bench.recipe_layers("fashion-94") == (
        "fashion-94", 1024, [(32, 13, "gelu", 0.3, 0, 2), (128, 6, "gelu", 0.3, 0, 2), (128, 3, "gelu", 0.3, 0, 2)])
    name, batch, layers = bench.recipe_layers("fashion-94-resnet9")
    assert batch == 512 and [(c, h, act, g, k) for c, h, act, _, g, k in layers] == [
        (32, 28, "celu", 32, 1), (64, 14, "celu", 32, 3), (128, 7, "celu", 32, 1), (256, 3, "celu", 32, 3)]
    # the default set has layers of >= 32 MB in fp16 (the bandwidth goal's size): the speedrun's
    big = [(net, c, h) for net, batch, layers in map(bench.recipe_layers, bench.DEFAULT_RECIPES)
           for c, h, *_ in layers if batch * c * h * h * 2 >= 32 * 2**20]
    assert big == [("cifar10-94-speedrun", 64, 15), ("cifar10-94-speedrun", 256, 7)]
    # airbench96: three convs per group, the third BN without activation (it precedes the add)
    _, _, layers = bench.recipe_layers("cifar10-96")
    assert [(c, h, act, k) for c, h, act, _, _, k in layers] == [
        (128, 15, "gelu", 2), (128, 15, "identity", 1), (512, 7, "gelu", 2), (512, 7, "identity", 1),
        (512, 3, "gelu", 2), (512, 3, "identity", 1)]
    assert "fashion-cpu" not in bench.recipe_names("all") and "cifar10-94-speedrun" in bench.recipe_names("all")


@pytest.mark.skipif(CUDA, reason="the GPU run is the real benchmark")
def test_bench_sweep_smoke_restores_tuning(tmp_path):
    import json
    bench = load_bench("kernels")
    before = dict(bn_act_op.GPU_TUNING)
    bench.main(["--smoke", "--sweep", "--out", str(tmp_path / "sweep.json")])
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert bn_act_op.GPU_TUNING == before
    rows = result["configs"]
    assert [r["stage"] for r in rows] == sorted(r["stage"] for r in rows)
    # stage 1: the defaults' own point first, then each first-stage knob set that differs from it
    firsts = {str({**before, **k}) for k in bench.SMOKE_STAGES[0]} | {str(before)}
    assert rows[0]["tuning"] == before and sum(r["stage"] == 1 for r in rows) == len(firsts)
    assert result["best"] in rows and len({str(r["tuning"]) for r in rows}) == len(rows)   # none twice
    # each later stage changes only its own knobs, over the best configuration of the stages before
    for stage in range(2, len(bench.SMOKE_STAGES) + 1):
        best = min((r for r in rows if r["stage"] < stage), key=lambda r: r["step_ms"])["tuning"]
        own = {k for knobs in bench.SMOKE_STAGES[stage - 1] for k in knobs}
        assert 0 < sum(r["stage"] == stage for r in rows) <= len(bench.SMOKE_STAGES[stage - 1])
        for r in rows:
            if r["stage"] == stage:
                assert {k: v for k, v in r["tuning"].items() if k not in own} == \
                    {k: v for k, v in best.items() if k not in own}
    assert bn_act_op.parse_tuning(result["best_env"]) == result["best"]["tuning"]
    assert result["confirm"][0]["tuning"] == before and result["confirmed_speedup"] > 0


# The launch knobs' defaults until 2026-12-04 (unpipelined, reductions per tile): the sweep-logic
# tests' fake timings are written against them, whatever the defaults are now.
FORMER_DEFAULTS = dict(tile=2048, warps=4, programs_per_sm=4, block_p=128, acc2d=0, finalize_c=32, stages=1,
                       fuse_finalize=0, reverse=0, pass2_per_sm=0)


@pytest.fixture
def former_defaults(monkeypatch):
    monkeypatch.setattr(bn_act_op, "GPU_TUNING", dict(FORMER_DEFAULTS))


def test_sweep_times_the_defaults_first_and_keeps_what_it_timed_when_interrupted(monkeypatch, former_defaults):
    bench = load_bench("kernels")
    before = dict(bn_act_op.GPU_TUNING)
    seen = []

    def step_ms(*_):        # the sweep's logic only: a fake timing per configuration
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(dict(bn_act_op.GPU_TUNING))
        return 10.0 - len(seen)
    monkeypatch.setattr(bench, "fused_step_ms", step_ms)
    stages = [[dict(tile=4096), dict(tile=before["tile"]), dict(warps=8)], [dict(stages=3)]]
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages)
    assert seen[0] == before and bn_act_op.GPU_TUNING == before
    assert not result["complete"] and [r["tuning"] for r in result["configs"]] == seen
    assert result["interrupted"] and bench.exit_status(result) == 1   # gpu_check.sh adopts nothing
    assert result["default_step_ms"] == 9.0 and result["best"]["step_ms"] == 7.0
    assert result["best_env"] and result["best_speedup"] == 9.0 / 7.0
    seen[:] = [None] * 3    # interrupted before the defaults were timed: nothing to compare with
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages)
    assert result["configs"] == [] and result["best_speedup"] is None and not result["complete"]


def test_sweep_confirms_the_best_against_the_defaults_with_fresh_paired_timings(monkeypatch, former_defaults):
    """After the stages, the defaults, the best and its twins (`reverse` flipped; `pass2_per_sm`
    at 0, or 16 where the best has 0) are timed again in turn; the confirmed speed-up is the
    ratio of those means, not of the grid's lucky minimum. Fake timings: tile 4096 is 1 ms
    faster, reverse 0.5 ms, pass2_per_sm=16 0.25 ms, and the first timing of the best grid point
    is 2 ms luckier than its later ones (the winner's curse)."""
    bench = load_bench("kernels")
    before = dict(bn_act_op.GPU_TUNING)
    seen = []

    def step_ms(*_):
        t = dict(bn_act_op.GPU_TUNING)
        seen.append(t)
        ms = 10.0 - (t["tile"] == 4096) - 0.5 * t["reverse"] - 0.25 * (t["pass2_per_sm"] == 16)
        lucky = t["tile"] == 4096 and not t["reverse"] and t["pass2_per_sm"] == 8 and seen.count(t) == 1
        return ms - 2.0 * lucky
    monkeypatch.setattr(bench, "fused_step_ms", step_ms)
    stages = [[dict(tile=before["tile"]), dict(tile=4096), dict(warps=8)], [dict(pass2_per_sm=8)], [dict(reverse=1)]]
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages, rounds=2)
    assert bn_act_op.GPU_TUNING == before and result["complete"]
    best = {**before, "tile": 4096, "pass2_per_sm": 8}
    assert result["best"]["tuning"] == best and result["best"]["step_ms"] == 7.0      # the lucky timing
    twins = [{**best, "reverse": 1}, {**best, "pass2_per_sm": 0}]    # pass2_per_sm 8 is neither 0 nor 16
    assert seen[-8:] == [before, best, *twins] * 2
    assert [c["tuning"] for c in result["confirm"]] == [before, best, *twins]
    assert [c["mean_ms"] for c in result["confirm"]] == [10.0, 9.0, 8.5, 9.0]
    assert bench.confirm_twins({"reverse": 1, "pass2_per_sm": 0, "tile": 1}) == [
        {"reverse": 0, "pass2_per_sm": 0, "tile": 1}, {"reverse": 1, "pass2_per_sm": 16, "tile": 1}]
    assert result["best_speedup"] == 10.0 / 7.0 and result["confirmed_speedup"] == 10.0 / 9.0


def test_sweep_stops_starting_knob_sets_after_its_time_budget_and_still_confirms(monkeypatch, former_defaults):
    """--sweep-seconds: a fake clock advances 1 s per timing; with 2.5 s the sweep times three
    knob sets, lists the rest as not timed (incomplete), and confirms its best of those."""
    bench = load_bench("kernels")
    before = dict(bn_act_op.GPU_TUNING)
    clock = [0.0]

    def step_ms(*_):
        clock[0] += 1.0
        return 10.0 - (bn_act_op.GPU_TUNING["tile"] == 4096) - 0.5 * (bn_act_op.GPU_TUNING["warps"] == 8)
    monkeypatch.setattr(bench, "fused_step_ms", step_ms)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    stages = [[dict(tile=before["tile"]), dict(tile=4096), dict(warps=8)], [dict(stages=3), dict(reverse=1)]]
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages, rounds=1, seconds=2.5)
    assert [r["tuning"] for r in result["configs"]] == [before, {**before, "tile": 4096}, {**before, "warps": 8}]
    assert result["not_timed"] == [{"stage": 2, "knobs": dict(stages=3)}, {"stage": 2, "knobs": dict(reverse=1)}]
    assert not result["complete"] and result["best"]["tuning"] == {**before, "tile": 4096}
    assert result["confirmed_speedup"] == 10.0 / 9.0 and bn_act_op.GPU_TUNING == before
    # Cut by its budget, the sweep did what it was asked: exit status 0, so that gpu_check.sh
    # adopts its confirmed best (it exited 1 before 2026-12-04, and the knobs were never adopted).
    assert not result["interrupted"] and bench.exit_status(result) == 0
    # no budget: every knob set is timed
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages, rounds=1)
    assert result["complete"] and result["not_timed"] == [] and len(result["configs"]) == 5


def test_sweep_keeps_its_timings_when_a_knob_set_or_the_confirmation_fails(monkeypatch, former_defaults):
    """A knob set that raises is recorded with its error and skipped; a confirmation that raises
    leaves the grid's timings, best and (unconfirmed) speed-up in the result."""
    bench = load_bench("kernels")
    before = dict(bn_act_op.GPU_TUNING)

    def step_ms(*_):
        if bn_act_op.GPU_TUNING["warps"] == 8:
            raise RuntimeError("out of resources")
        return 10.0 - (bn_act_op.GPU_TUNING["tile"] == 4096)

    def confirm_fails(*_):
        raise RuntimeError("capture failed")
    monkeypatch.setattr(bench, "fused_step_ms", step_ms)
    monkeypatch.setattr(bench, "step_ms_as_in_training", confirm_fails)
    stages = [[dict(tile=before["tile"]), dict(warps=8), dict(tile=4096)], [dict(reverse=1)]]
    result = bench.sweep(None, "cpu", torch.float32, [], True, stages)
    assert bn_act_op.GPU_TUNING == before and result["complete"]
    failed = [r for r in result["configs"] if "error" in r]
    assert len(failed) == 1 and failed[0]["tuning"]["warps"] == 8 and "out of resources" in failed[0]["error"]
    assert result["best"]["tuning"] == {**before, "tile": 4096} and result["best_speedup"] == 10.0 / 9.0
    assert result["confirm"] is None and result["confirmed_speedup"] is None
    assert result["confirm_error"] == "RuntimeError: capture failed"


def clock_stand_ins(cost=None):
    """Stand-ins for a CUDA graph (capture = one call of fn, replay = another, its result kept as
    `out`) and CUDA events, on a fake clock that the code under test advances, and each replay
    by cost(graph, graphs made) if given. Returns (Graph, Event, clock, the graphs made)."""
    clock, graphs = [0.0], []

    class Graph:
        def __init__(self, fn):
            self.fn, self.out, self.replays = fn, fn(), 0
            graphs.append(self)

        def replay(self):
            self.out, self.replays = self.fn(), self.replays + 1
            clock[0] += cost(self, graphs) if cost else 0.0

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.t = clock[0]

        def elapsed_time(self, end):
            return end.t - self.t
    return Graph, Event, clock, graphs


def graph_stand_ins():
    """clock_stand_ins where the first graph made costs 1 ms a replay (the forward) and later ones
    2 ms (the backward). Returns (Graph, Event, the graphs made)."""
    Graph, Event, _, graphs = clock_stand_ins(lambda graph, graphs: 1.0 if graph is graphs[0] else 2.0)
    return Graph, Event, graphs


@pytest.mark.skipif(CUDA, reason="stand-ins for CUDA's graphs and events, in the interpreter")
def test_training_cache_timing_replays_each_pass_after_setting_up_the_cache(monkeypatch):
    """bench/kernels.py's confirmation timing: per layer a forward and a backward graph, each
    replayed (warm-up + iters) times after the cache set-up, only the replays between the
    events; the backward graph is the op's backward for that forward (dx as autograd's)."""
    bench = load_bench("kernels")
    Graph, Event, graphs = graph_stand_ins()
    made = []
    real_tensors = bench.layer_tensors

    def tensors(*args):
        made.append(real_tensors(*args))
        return made[-1]
    monkeypatch.setattr(bench, "layer_tensors", tensors)
    timer = bench.Timer("cpu", warmup=1, iters=2)
    net = ("smoke", 4, [(40, 5, "gelu", 0.3, 2, 3)])       # ghost groups of 2, the layer counted 3 times
    ms = bench._training_cache_ms(timer, "cpu", torch.float32, [net], True, graph=Graph, event=Event,
                                  sync=lambda: None, l2_bytes=1024)
    assert ms == 3 * (1.0 + 2.0)                            # per replay of both, over iters, x count
    assert [g.replays for g in graphs] == [3, 3]            # warm-up + iters each
    x, dy, w, b, _ = made[0]
    ref = x.detach().clone().requires_grad_()
    y, *_ = bn_act_op.fused_train(ref, w, b, bench.EPS, "gelu", 0.3, 2)
    (dx_ref,) = torch.autograd.grad(y, ref, dy)
    assert torch.equal(graphs[1].out[0], dx_ref) and torch.equal(graphs[0].out[0], y.detach())


@pytest.mark.skipif(CUDA, reason="stand-ins for CUDA's graphs and events, in the interpreter")
@pytest.mark.parametrize("variant", ["fused", "eager", "compiled"])
def test_each_variant_timed_with_the_l2_cache_as_in_training(variant):
    """bench/kernels.py's *_as_in_training timings (the kernel benchmark's fused, eager and
    compiled variants alike): a forward graph (autograd recording) and a backward graph
    (autograd's gradients of that forward's y), each replayed (warm-up + iters) times after the
    cache set-up, only the replays between the events; the backward's gradients are autograd's."""
    bench = load_bench("kernels")
    Graph, Event, graphs = graph_stand_ins()
    fn = bench.variants("gelu", 0.3, 2, "eager")[variant]
    x, dy, w, b, inputs = bench.layer_tensors("cpu", torch.float32, 4, 40, 5, False)
    rm, rv = torch.zeros(40), torch.ones(40)
    evict = bench.l2_evict_buffer("cpu", 1024)
    assert evict.numel() == 4096
    timer = bench.Timer("cpu", warmup=1, iters=2)
    ms = bench.autograd_as_in_training_ms(timer, lambda: fn(x, w, b, rm, rv), x, dy, inputs, evict,
                                          graph=Graph, event=Event, sync=lambda: None)
    assert ms == (1.0, 2.0) and [g.replays for g in graphs] == [3, 3]
    fresh = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(fn(*fresh, rm.clone(), rv.clone()), fresh, dy)
    assert len(graphs[1].out) == 3 and all(torch.equal(g, r) for g, r in zip(graphs[1].out, want))


@pytest.mark.skipif(CUDA, reason="stand-ins for CUDA's graphs and events, in the interpreter")
def test_compiled_variant_timed_as_in_training_after_its_host_timings():
    """bench_layer times the host launches first, so the compiled reference's backward has run
    once without retain_graph (AOTAutograd then donates its saved buffers) before the
    as-in-training replays need it with retain_graph: that raised for every compiled row on an
    H200 (2026-12-04, "compiled with non-empty donated buffers"), leaving no compiled timing."""
    bench = load_bench("kernels")
    Graph, Event, graphs = graph_stand_ins()
    fn = bench.variants("gelu", 0.3, 0, "aot_eager")["compiled"]
    x, dy, w, b, inputs = bench.layer_tensors("cpu", torch.float32, 4, 8, 5, False)
    rm, rv = torch.zeros(8), torch.ones(8)
    torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy)        # as the host timings run it
    timer = bench.Timer("cpu", warmup=1, iters=2)
    ms = bench.autograd_as_in_training_ms(timer, lambda: fn(x, w, b, rm, rv), x, dy, inputs,
                                          bench.l2_evict_buffer("cpu", 1024), graph=Graph, event=Event,
                                          sync=lambda: None)
    assert ms == (1.0, 2.0) and [g.replays for g in graphs] == [3, 3]


@pytest.mark.skipif(CUDA, reason="stand-ins for CUDA's graphs and events")
def test_in_sequence_timing_gives_each_launch_the_time_it_adds_to_its_pass():
    """bench/kernels.py's in_sequence_us: per pass a graph of its first k launches for k = 0..n,
    each replayed (warm-up + iters) times after the cache set-up (its pass's input rewritten);
    launch k's time is the difference of the means with k and k - 1 launches. Fake launches
    advance a fake clock by known milliseconds."""
    bench = load_bench("kernels")
    Graph, Event, clock, graphs = clock_stand_ins()

    def launch(ms):
        def run():
            clock[0] += ms
        return run
    x, dy = torch.ones(3), torch.ones(2)
    written = []
    x.mul_ = lambda v: written.append("x")          # the cache set-up rewrites the pass's input
    dy.mul_ = lambda v: written.append("dy")
    passes = [([launch(0.004), launch(0.010), launch(0.020)], x), ([launch(0.030), launch(0.002)], dy)]
    timer = bench.Timer("cpu", warmup=1, iters=4)
    us = bench.in_sequence_us(timer, passes, bench.l2_evict_buffer("cpu", 64), graph=Graph, event=Event,
                              sync=lambda: None)
    assert [[round(u, 6) for u in part] for part in us] == [[4.0, 10.0, 20.0], [30.0, 2.0]]
    assert len(graphs) == 4 + 3 and all(g.replays == 5 for g in graphs)      # k = 0..n per pass
    assert written == (["x"] * 4 + ["dy"] * 3) * 5


@pytest.mark.skipif(CUDA, reason="stand-ins for CUDA's graphs and events, in the interpreter")
@pytest.mark.parametrize("fuse_finalize", [0, 1])
def test_kernels_in_sequence_times_the_ops_own_launches_in_order(monkeypatch, fuse_finalize):
    """bench/kernels.py's kernels_in_sequence on the fused op (interpreter): the op's Triton
    kernels, each made to advance the fake clock by its own cost, come back in launch order with
    their own costs, the forward's as one pass (x rewritten before each replay) and the
    backward's as another (dy rewritten)."""
    bench = load_bench("kernels")
    Graph, Event, clock, _ = clock_stand_ins()
    costs = {"bn_stats_kernel": 0.001, "bn_finalize_kernel": 0.002, "bn_apply_kernel": 0.004,
             "bn_bwd_reduce_kernel": 0.008, "bn_bwd_finalize_kernel": 0.016, "bn_bwd_dx_kernel": 0.032}

    class Costed:
        def __init__(self, name):
            self.name, self.kernel = name, getattr(bn_act_op.K, name)

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                clock[0] += costs[self.name]
                return self.kernel[grid](*args, **kwargs)
            return launch
    for name in costs:
        monkeypatch.setattr(bn_act_op.K, name, Costed(name))
    monkeypatch.setattr(bn_act_op, "GPU_TUNING", {**bn_act_op.GPU_TUNING, "fuse_finalize": fuse_finalize})
    x, dy, w, b, inputs = bench.layer_tensors("cpu", torch.float32, 4, 40, 5, True)
    written = []
    x.mul_ = lambda v: written.append("x")
    dy.mul_ = lambda v: written.append("dy")
    fn = bench.variants("gelu", 0.3, 0, "eager")["fused"]
    rm, rv = torch.zeros(40), torch.ones(40)
    timer = bench.Timer("cpu", warmup=1, iters=2)
    us = bench.kernels_in_sequence(timer, lambda: torch.autograd.grad(fn(x, w, b, rm, rv), inputs, dy), x, dy,
                                   bench.l2_evict_buffer("cpu", 64), graph=Graph, event=Event, sync=lambda: None)
    order = ["bn_stats_kernel", "bn_apply_kernel", "bn_bwd_reduce_kernel", "bn_bwd_dx_kernel"] if fuse_finalize \
        else list(costs)
    assert [round(u, 6) for u in us] == [1e3 * costs[n] for n in order]
    forward = 2 if fuse_finalize else 3         # x rewritten before each forward graph, dy before each backward one
    assert written == (["x"] * (forward + 1) + ["dy"] * (len(order) - forward + 1)) * 3


def test_sweep_reachable_covers_every_path_through_the_stages():
    bench = load_bench("kernels")
    stages = [[dict(tile=1), dict(tile=2)], [dict(acc2d=1, stages=3)], [dict(block_p=8)]]
    got = {tuple(sorted(c.items())) for c in bench.sweep_reachable(stages)}
    want = {tuple(sorted({"tile": t, **a, **b}.items()))
            for t in (1, 2) for a in ({}, dict(acc2d=1, stages=3)) for b in ({}, dict(block_p=8))}
    assert got == want


def test_parse_tuning_accepts_knobs_and_rejects_bad_ones():
    assert bn_act_op.parse_tuning("") == {}
    assert bn_act_op.parse_tuning("tile=4096, warps=8,programs-per-sm=3") == dict(tile=4096, warps=8,
                                                                                 programs_per_sm=3)
    assert bn_act_op.parse_tuning("acc2d=0,finalize_c=8,block_p=512,stages=3,fuse_finalize=1,reverse=1") == dict(
        acc2d=0, finalize_c=8, block_p=512, stages=3, fuse_finalize=1, reverse=1)
    assert bn_act_op.parse_tuning("pass2_per_sm=0,pass2_per_sm=8") == dict(pass2_per_sm=8)   # 0: as the reductions
    for bad in ("tile=3000", "warps=0", "tiles=1024", "tile", "warps=four", "acc2d=2", "finalize_c=12",
                "programs_per_sm=0", "stages=0", "fuse_finalize=2", "reverse=2", "pass2_per_sm=-1", "pass2_per_sm=3000x"):
        with pytest.raises(ValueError, match="FASTRES_BN_TUNING"):
            bn_act_op.parse_tuning(bad)


# ---------------------------------------------------------------- GPU, real sizes
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape,ghost", [((512, 64, 32, 32), 32), ((512, 128, 16, 16), 0),
                                         ((1000, 256, 7, 7), 32), ((512, 512, 4, 4), 0)])
# No relu here: at millions of elements a few z within float rounding of 0 flip relu'(z)
# between the fused op and the reference (relu runs at small sizes above).
@pytest.mark.parametrize("act", ["celu", "gelu", "silu"])
def test_gpu_real_sizes(shape, ghost, act):
    check_against_reference(shape, torch.float16, act, ghost=ghost, freeze=act == "celu")


@gpu
@pytest.mark.gpu
def test_gpu_bf16_real_size():
    # One case (each dtype compiles its own kernels, ~1 s each, out of the GPU check's budget);
    # every activation, eval and ghost groups run in bf16 at small sizes in the tests above.
    check_against_reference((512, 64, 32, 32), torch.bfloat16, "gelu", ghost=32, freeze=True)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("tuning", [dict(tile=1024, warps=8, programs_per_sm=2), dict(tile=4096, programs_per_sm=8),
                                    dict(acc2d=1), dict(tile=4096, warps=8, programs_per_sm=2, acc2d=1),
                                    dict(stages=3), dict(tile=4096, warps=8, programs_per_sm=2, acc2d=1, stages=4),
                                    dict(fuse_finalize=1), dict(fuse_finalize=1, stages=3, finalize_c=8),
                                    dict(reverse=1, stages=3), dict(pass2_per_sm=16),
                                    dict(programs_per_sm=2, pass2_per_sm=8, reverse=1),
                                    dict(tile=8192, warps=8, stages=3),
                                    FORMER_DEFAULTS])
def test_gpu_other_launch_knobs(tuning, monkeypatch):
    # bench/kernels.py --sweep may hand any grid point to training via FASTRES_BN_TUNING.
    monkeypatch.setattr(bn_act_op, "GPU_TUNING", {**bn_act_op.GPU_TUNING, **tuning})
    check_against_reference((1000, 256, 7, 7), torch.float16, "gelu", ghost=0, freeze=True)
    check_against_reference((512, 64, 32, 32), torch.float16, "celu", ghost=32)
    x = make_input((512, 128, 16, 16), torch.float16, mean=300.0, std=1.0)
    bn, _ = make_pair(128, "identity")
    bn.momentum = 1.0
    bn(x)
    var64 = x.double().permute(1, 0, 2, 3).reshape(128, -1).var(1)
    torch.testing.assert_close(bn.running_var.double(), var64, rtol=1e-4, atol=0)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("fuse_finalize", [0, 1])
def test_gpu_launch_cache_gives_kernel_grids_bits(fuse_finalize, monkeypatch):
    """launch_cache=1 (bn_act_op._LaunchCache): from the second call on, each launch goes straight
    through the compiled kernel's launcher. Outputs and gradients, eager over three steps and
    replayed from a CUDA graph captured with the cache on, are the bits of kernel[grid]'s launches
    (the kernels are deterministic); as are eval, a ghost-BN layer with a trainable scale, and an
    input 2 bytes off 16-byte alignment (a key, and a compiled kernel, of its own)."""
    cases = [((256, 64, 16, 16), torch.float16, "gelu", 0, True, 0),
             ((96, 40, 8, 8), torch.float32, "celu", 32, False, 0),
             ((64, 64, 8, 8), torch.float16, "silu", 0, True, 1)]        # (shape, dtype, act, ghost, freeze, offset)

    def steps(cache):
        monkeypatch.setattr(bn_act_op, "GPU_TUNING", {**bn_act_op.GPU_TUNING, "launch_cache": cache,
                                                      "fuse_finalize": fuse_finalize})
        out = []
        for shape, dtype, act, ghost, freeze, offset in cases:
            n, c, h, w = shape
            base = torch.randn(n * c * h * w + 8, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)
            # Channels-last, `offset` elements into its storage (a copy would be aligned anew).
            x = base[offset:offset + n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2).requires_grad_()
            dy = make_input(shape, dtype, mean=0.0, std=1.0, seed=2)
            bn, _ = make_pair(c, act, ghost, freeze)
            for _ in range(3):
                y = bn(x)
                dx, db = torch.autograd.grad(y, (x, bn.bias), dy)
                out += [y, dx, db]
            bn.eval()
            out.append(bn(x))
            bn.train()
        bn, _ = make_pair(64, "gelu", 0, True)          # a CUDA graph, captured with the cache warm
        x = make_input((128, 64, 8, 8), torch.float16).requires_grad_()
        dy = make_input((128, 64, 8, 8), torch.float16, mean=0.0, std=1.0, seed=2)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                torch.autograd.grad(bn(x), x, dy)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = bn(x)
            dx, = torch.autograd.grad(y, x, dy)
        graph.replay()
        torch.cuda.synchronize()
        return out + [y.clone(), dx.clone(), bn.running_mean.clone(), bn.running_var.clone()]

    plain, cached = steps(0), steps(1)
    assert len(plain) == len(cached)
    for i, (a, b) in enumerate(zip(plain, cached)):
        assert torch.equal(a, b), i


@gpu
@pytest.mark.gpu
def test_gpu_bit_identical_and_shifted():
    x = make_input((512, 128, 16, 16), torch.float16, mean=300.0, std=1.0)
    dy = make_input((512, 128, 16, 16), torch.float16, seed=3)
    outs = []
    for _ in range(2):
        bn, _ = make_pair(128, "celu")
        bn.momentum = 1.0
        outs.append([*run(bn, x, dy)[:2], bn.running_var])
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    var64 = x.double().permute(1, 0, 2, 3).reshape(128, -1).var(1)
    torch.testing.assert_close(outs[0][2].double(), var64, rtol=1e-4, atol=0)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape,ghost", [((1024, 64, 15, 15), 0), ((1024, 256, 7, 7), 0), ((512, 64, 32, 32), 32)])
@pytest.mark.parametrize("stages", [1, 3])
def test_gpu_fused_finalize_is_deterministic_and_matches_the_finalize_kernels(shape, ghost, stages, monkeypatch):
    """The fused finalize's last-arrival counters on real sizes: repeated runs give identical
    bits (a partial read before it was written would not), match the finalize kernels within
    rounding, and leave the counters at zero."""
    monkeypatch.setitem(bn_act_op.GPU_TUNING, "stages", stages)
    x = make_input(shape, torch.float16)
    dy = make_input(shape, torch.float16, seed=3)
    outs = []
    for fuse in (0, 1, 1, 1, 1):
        monkeypatch.setitem(bn_act_op.GPU_TUNING, "fuse_finalize", fuse)
        bn, _ = make_pair(shape[1], "gelu", ghost)
        y, dx, g = run(bn, x, dy)
        outs.append([y, dx, g["weight"], g["bias"], bn.running_mean, bn.running_var])
    for other in outs[2:]:
        for a, b in zip(outs[1], other):
            assert torch.equal(a, b)
    for (name, unfused), fused in zip(zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"),
                                          outs[0]), outs[1]):
        close(fused, unfused, unfused.dtype, name)
    assert not bn_act_op._COUNTERS[x.device].any()


@pytest.mark.skipif(CUDA, reason="the GPU run is the real measurement")
def test_host_overhead_smoke(tmp_path):
    import json
    import pathlib
    import subprocess
    import sys
    # A subprocess: on a CPU the script replaces the Triton kernels with no-ops.
    script = pathlib.Path(__file__).parents[1] / "bench" / "host_overhead.py"
    out = subprocess.run([sys.executable, str(script), "--iters", "20", "--no-compile", "--out",
                          str(tmp_path / "host.json")], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "host.json").read_text())
    assert result["kernels_stubbed"] and [r["variant"] for r in result["rows"]] == ["fused", "reference"]
    assert all(r["us_6_layers"] > r["us_1_layer"] > 0 for r in result["rows"])
    # The op's own share of a layer (kernels stubbed): less than the layer's whole cost.
    assert set(result["impl_us"]) == {"train_impl", "backward_impl"}
    assert 0 < sum(result["impl_us"].values()) < result["rows"][0]["us_6_layers"]


def test_host_overhead_on_a_cpu_also_times_triton_launch_path_on_a_stand_in_driver(tmp_path):
    # Without TRITON_INTERPRET the script also runs the real kernels, compiled for sm_90 and
    # launched on launch_path's stand-in driver: the layer then costs the stubbed layer plus six
    # times kernel[grid]'s Python (measured at ~14 us a launch on a 2-core EPYC, 2026-12-04).
    import json
    import os
    import subprocess
    if tuple(map(int, triton.__version__.split(".")[:2])) < (3, 6):
        pytest.skip("the stand-in driver follows triton 3.6's driver interface")
    script = Path(__file__).resolve().parents[1] / "bench" / "host_overhead.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(script), "--iters", "100", "--no-compile", "--out",
                          str(tmp_path / "host.json")], capture_output=True, text=True, timeout=600,
                         env={**env, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads((tmp_path / "host.json").read_text())["rows"]}
    assert set(rows) == {"fused", "reference", "fused, stand-in driver", "fused, stand-in driver, launch cache"}, rows
    stubbed, stand_in = rows["fused"]["us_6_layers"], rows["fused, stand-in driver"]["us_6_layers"]
    assert stand_in > stubbed + 6 * 6 * 2, (stubbed, stand_in)     # > 2 us per launch: Triton's Python ran
    assert rows["fused, stand-in driver, launch cache"]["bn_tuning"]["launch_cache"] == 1


def test_host_overhead_launch_timing_replays_the_recorded_launch():
    # bench/host_overhead.py's per-launch timing (run on a GPU) records the forward's apply
    # kernel with its arguments and replays it; here in the interpreter: plumbing only.
    bench = load_bench("host_overhead")
    real = bn_act_op.K.bn_apply_kernel
    x = make_input((2, 16, 3, 3), torch.float32)
    out, note = bench.launch_us(x, iters=2)
    # The interpreter compiles nothing: the compiled launcher is a GPU timing.
    assert set(out) == {"triton_apply_kernel", "torch_empty", "torch_add_"} and all(v > 0 for v in out.values())
    assert note == "no compiled kernel (Triton's interpreter)"
    assert bn_act_op.K.bn_apply_kernel is real


def test_stand_in_driver_keeps_launch_arguments_only_when_recording():
    # The host timings on the stand-in driver (host_overhead.py, launch_path.py's timed loops) must
    # not keep each launch's arguments: a launcher that did kept every tensor the loop allocated
    # alive and made the loop it timed 1.6x slower (see StandInDriver).
    import weakref
    bench = load_bench("launch_path")
    assert bench.StandInDriver().record is False
    for record in (False, True):
        driver = bench.StandInDriver(record=record)
        launch, t = driver.launcher_cls(None, None), torch.empty(4)
        alive = weakref.ref(t)
        launch(1, 1, 1, t)
        del t
        assert (alive() is not None) == record and len(driver.calls) == record


def test_launch_path_times_both_paths_on_a_compiled_kernel_without_a_gpu(tmp_path):
    """bench/launch_path.py compiles the apply kernel for sm_90 with Triton's driver replaced by a
    stand-in that launches nothing, checks that the compiled launcher is called with the grid and
    arguments kernel[grid] gives it (a 2-D grid padded to 3: the compiled kernel reads grid[2]),
    directly and through the launch cache it measures (which must key an unaligned pointer
    apart), and times the three paths' Python. The stand-in follows triton 3.6's driver."""
    import json
    import os
    import subprocess
    script = Path(__file__).resolve().parents[1] / "bench" / "launch_path.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(script), "--iters", "50", "--out", str(tmp_path / "lp.json")],
                         capture_output=True, text=True, timeout=600, env=env)
    if out.returncode == 3 and tuple(map(int, triton.__version__.split(".")[:2])) < (3, 6):
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "lp.json").read_text())
    assert result["kernel"] == "bn_apply_kernel" and result["parameters"] == len(bn_act_op.K.bn_apply_kernel.arg_names)
    assert set(result["us"]) == {"kernel_grid", "compiled_launcher", "launch_cache"}
    assert all(v > 0 for v in result["us"].values())


LAUNCH_CACHE_PROBE = """
import json, os, sys
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]
import torch
import launch_path
from triton.runtime.driver import driver
from fastres.kernels import bn_act_op as O
stand_in = launch_path.StandInDriver(record=True)
driver.set_active(stand_in)


def calls(cache, case):
    O.GPU_TUNING.update(launch_cache=cache, fuse_finalize=case["fuse"])
    x, w, b = case["x"], case["w"], case["b"]
    del stand_in.calls[:]
    if case["eval"]:
        O._eval_impl(x, w, b, torch.zeros(x.shape[1]), torch.ones(x.shape[1]), 1e-5, "gelu", 0.3)
    else:
        _, mean, rstd, _ = O._train_impl(x, w, b, 1e-5, "celu", 0.3, case["ghost"])
        O._backward_impl(torch.ones_like(x), x, w, b, mean, rstd, 1e-5, "celu", 0.3, case["ghost"], True,
                         case["wgrad"])
    return list(stand_in.calls)


def same(a, b, inputs):
    # The launcher's arguments: grid x3, stream, function, the compiled kernel's packed metadata
    # (one object per compiled kernel: the same specialisation), hooks, then the kernel's own.
    if a[:3] != b[:3] or a[5] is not b[5] or len(a) != len(b):
        return False
    for u, v in zip(a[9:], b[9:]):
        if torch.is_tensor(u):
            if (u.dtype, u.shape, u.data_ptr() % 16) != (v.dtype, v.shape, v.data_ptr() % 16):
                return False
            if any(u is t for t in inputs) != any(v is t for t in inputs):
                return False
        elif u != v:
            return False
    return True


def make(n, c, dtype, offset=0):
    base = torch.randn(n * c * 9 + 8, dtype=dtype)
    return base[offset:offset + n * c * 9].view(n, 3, 3, c).permute(0, 3, 1, 2)    # channels-last


cases = [dict(x=make(4, 64, torch.float16), ghost=0, wgrad=False, fuse=0, eval=False),
         dict(x=make(6, 40, torch.float32), ghost=2, wgrad=True, fuse=0, eval=False),
         dict(x=make(4, 64, torch.float16), ghost=0, wgrad=True, fuse=1, eval=False),
         dict(x=make(4, 64, torch.float16), ghost=0, wgrad=False, fuse=0, eval=True),
         dict(x=make(4, 64, torch.float16, offset=1), ghost=0, wgrad=False, fuse=0, eval=False)]   # x unaligned
out = []
for case in cases:
    c = case["x"].shape[1]
    case.update(w=torch.rand(c) + 0.5, b=torch.randn(c))
    inputs = (case["x"], case["w"], case["b"])
    keys = len(O._LAUNCHES)
    plain, first, second = calls(0, case), calls(1, case), calls(1, case)
    out.append({"launches": len(plain), "new_keys": len(O._LAUNCHES) - keys,
                "first": len(first) == len(plain) and all(same(a, b, inputs) for a, b in zip(first, plain)),
                "second": len(second) == len(plain) and all(same(a, b, inputs) for a, b in zip(second, plain))})
# A first call through stand-ins for the kernels (as bench/kernels.py's record_launches makes
# them) records nothing: the next call with the real kernels records the key.
class Recorder:
    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        return self.kernel[grid]


real = {n: getattr(O.K, n) for n in dir(O.K) if n.endswith("_kernel")}
case = dict(cases[0], x=make(2, 64, torch.float16), ghost=0, wgrad=False, fuse=0, eval=False)
case.update(w=torch.rand(64) + 0.5, b=torch.randn(64))
keys = len(O._LAUNCHES)
for n, k in real.items():
    setattr(O.K, n, Recorder(k))
calls(1, case)
for n, k in real.items():
    setattr(O.K, n, k)
recorded = len(O._LAUNCHES) - keys
calls(1, case)
print(json.dumps({"cases": out, "through_stand_ins": recorded, "then": len(O._LAUNCHES) - keys - recorded}))
"""


def test_launch_cache_launches_as_kernel_grid_does(tmp_path):
    """The launch_cache knob (bn_act_op._LaunchCache): with the real kernels compiled for sm_90
    and launched on launch_path's stand-in driver (no GPU), the op's launches through the cache,
    on the first call (recording) and on the next (straight through the compiled launchers),
    reach Triton's launcher with what kernel[grid] gives it: the same grids, the same compiled
    kernel (specialisation), equal arguments and the caller's tensors in the same places. Each
    case, trained or eval, ghost groups, trainable scale, the fused finalize and an unaligned
    input, gets a key of its own (two ops: forward and backward). A first call made through
    stand-ins for the kernels (bench/kernels.py's recorders) records nothing."""
    import json
    import os
    import subprocess
    if tuple(map(int, triton.__version__.split(".")[:2])) < (3, 6):
        pytest.skip("the stand-in driver follows triton 3.6's driver interface")
    probe = tmp_path / "probe.py"
    probe.write_text(LAUNCH_CACHE_PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTRES_BN_TUNING")}
    bench = Path(__file__).resolve().parents[1] / "bench"
    out = subprocess.run([sys.executable, str(probe), str(bench)], capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    cases = result["cases"]
    assert [c["launches"] for c in cases] == [6, 6, 4, 1, 6]
    assert [c["new_keys"] for c in cases] == [2, 2, 2, 1, 2]
    assert all(c["first"] and c["second"] for c in cases), cases
    assert result["through_stand_ins"] == 0 and result["then"] == 2      # forward and backward


# What each kernel writes (without the fused finalize, the default).
_KERNEL_OUTPUTS = {"bn_stats_kernel": ("pmean_ptr", "pm2_ptr"),
                   "bn_finalize_kernel": ("mean_ptr", "rstd_ptr", "var_ptr"), "bn_apply_kernel": ("y_ptr",), "bn_bwd_reduce_kernel": ("psum_g_ptr", "psum_gx_ptr"),
                   "bn_bwd_finalize_kernel": ("sum_g_ptr", "sum_gx_ptr", "dw_ptr", "db_ptr"),
                   "bn_bwd_dx_kernel": ("dx_ptr",)}


def test_host_overhead_binds_a_launch_as_the_compiled_launcher_takes_it():
    # bench/host_overhead.py times Triton's compiled launcher (GPU) with every kernel parameter
    # positional, in order, constexprs included (launch_path.launch_args). Here each launch of a forward +
    # backward is replayed with its arguments so bound, launch options as keywords, into zeroed
    # outputs: the recorded launch's outputs, bit for bit.
    bench, bench_kernels = load_bench("launch_path"), load_bench("kernels")
    x = make_input((3, 24, 5, 5), torch.float32).requires_grad_()
    w = (torch.rand(24, device=DEVICE) + 0.5).requires_grad_()
    b = torch.randn(24, device=DEVICE).requires_grad_()
    dy = torch.randn_like(x)

    def step():
        y, *_ = bn_act_op.fused_train(x, w, b, 1e-5, "gelu", 1.0, 0)
        torch.autograd.grad(y, (x, w, b), dy)
    launches = bench_kernels.record_launches(step)
    assert sorted({name for name, *_ in launches}) == sorted(_KERNEL_OUTPUTS)
    for name, kernel, grid, args, kwargs, _ in launches:
        bound = bench.launch_args(kernel, args, kwargs)
        assert len(bound) == len(kernel.arg_names) and bound[:len(args)] == list(args)
        outputs = [bound[kernel.arg_names.index(n)] for n in _KERNEL_OUTPUTS[name]]
        want = [t.clone() for t in outputs]
        for t in outputs:
            t.zero_()
        kernel[grid](*bound, **{k: v for k, v in kwargs.items() if k not in kernel.arg_names})
        for n, t, expected in zip(_KERNEL_OUTPUTS[name], outputs, want):
            assert torch.equal(t, expected), (name, n)


@pytest.mark.parametrize("name,value,message", [
    ("FASTRES_BN_OP", "triton", "FASTRES_BN_OP must be one of custom_op, triton_op, got 'triton'"),
    ("FASTRES_BN_TUNING", "tile=3000", "FASTRES_BN_TUNING: tile must be a power of two, got 3000")])
def test_bad_kernel_settings_are_one_error_line(name, value, message):
    # Both are read when the kernels load: a bad value is one clear error (status 2 from the
    # CLI), not a silent default or a traceback.
    import subprocess
    import sys
    env = {**__import__("os").environ, name: value, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", "import fastres.kernels.bn_act_op"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode != 0 and message in out.stderr
    cli = subprocess.run([sys.executable, "-m", "fastres", "--list-recipes"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert cli.returncode == 2 and cli.stderr == f"fastres: error: {message}\n" and cli.stdout == ""
    # The `fastres` command runs setup.py's console-script function (it was cli.main, which the
    # error reaches before it can catch anything: a traceback and status 1 until 2026-12-04).
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"fastres=fastres.__main__:run"' in setup
    script = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['fastres', '--list-recipes']; "
                             "from fastres.__main__ import run; sys.exit(run())"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert script.returncode == 2 and script.stderr == f"fastres: error: {message}\n" and script.stdout == ""


def test_host_overhead_keeps_the_other_variants_when_one_fails(monkeypatch, tmp_path):
    # On a GPU an experimental variant (FASTRES_BN_OP=triton_op) may fail to compile: its row
    # records the error and the other variants are still measured and written.
    import json
    bench = load_bench("host_overhead")
    monkeypatch.setattr(bench, "stub_kernels", lambda: None)
    monkeypatch.setattr(bench, "impl_us", lambda x, dy, iters: {"train_impl": 1.0})   # no interpreter timings

    def fake_rounds(backend, device, x, dy, compiled, iters):
        if backend == "reference":
            raise RuntimeError("no such kernel")
        return bench.per_layer([10.0, 11.0], [60.0, 61.0])
    monkeypatch.setattr(bench, "chain_rounds", fake_rounds)
    result = bench.main(["--no-compile", "--out", str(tmp_path / "host.json")])
    assert json.loads((tmp_path / "host.json").read_text()) == result
    fused, reference = result["rows"]
    assert fused["us_per_layer"] == pytest.approx(10.0) and reference == {
        "variant": "reference", "compiled": False, "error": "RuntimeError: no such kernel"}


def test_host_cost_per_layer_is_the_fastest_round_of_each_chain_and_never_negative():
    """Timed once each, a load spike on the 1-layer chain made the cost per layer negative."""
    bench = load_bench("host_overhead")
    spiked = bench.per_layer([900.0, 100.0, 101.0], [600.0, 610.0, 350.0])    # 900: a busy host
    assert spiked["us_per_layer"] == pytest.approx(50.0) and spiked["us_1_layer"] == 100.0
    assert spiked["rounds_us_1_layer"] == [900.0, 100.0, 101.0]
    assert bench.per_layer([100.0, 99.0], [98.0, 120.0])["us_per_layer"] is None     # noise: no figure


def test_sweep_cut_by_its_time_budget_exits_0_as_a_script(tmp_path):
    """The real script, as gpu_check.sh runs it with --sweep-seconds (interpreter, smoke shapes)."""
    import json
    import subprocess
    script = Path(__file__).resolve().parent.parent / "bench" / "kernels.py"
    out = tmp_path / "sweep.json"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--sweep", "--sweep-seconds", "0.001",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["not_timed"] and not result["complete"] and not result["interrupted"]
    assert proc.returncode == 0 and result["confirmed_speedup"] is not None, proc.stdout[-2000:]


def test_a_backward_timed_no_longer_than_its_forward_gets_no_bandwidth_and_misses_the_goal():
    """Backward = (forward + backward) - forward; timing noise can make it <= 0. It was clamped to
    1e-6 ms before 2026-12-04: a backward 'at' 2e8 % of copy bandwidth, which min() could count
    towards the >= 80% goal."""
    bench = load_bench("kernels")
    elem, copy_gbs = 40 * 2**20, 3000.0
    noisy = bench.rates(0.050, 0.049, elem, copy_gbs, "_graph")
    assert noisy["bwd_ms_graph"] is None and noisy["bwd_pct_copy_graph"] is None and noisy["both_ms_graph"] == 0.049
    good = bench.rates(0.050, 0.130, elem, copy_gbs)
    assert good["bwd_ms"] == pytest.approx(0.080) and good["bwd_gbs"] == pytest.approx(5 * elem / 0.080 / 1e6)
    assert good["fwd_pct_copy"] == pytest.approx(100 * 3 * elem / 0.050 / 1e6 / copy_gbs)
    layer = {"net": "n", "shape": [512, 64, 32, 32], "mbytes": 40.0}
    fast_fwd = bench.rates(0.045, 0.044, elem, copy_gbs)      # forward at 93% of copy, backward noise
    big, key, at_80 = bench.bandwidth_goal([{**layer, "variants": {"fused": fast_fwd}}])
    assert len(big) == 1 and key == "" and at_80 == []
    both_fast = bench.rates(0.045, 0.115, elem, copy_gbs)
    assert bench.bandwidth_goal([{**layer, "variants": {"fused": both_fast}}])[2] == ["n 64@32"]
    assert bench.fmt(None, 5, 0) == "    -" and bench.fmt(1.25, 6, 2) == "  1.25"


@pytest.mark.parametrize("call, message", [
    (lambda x, w: bn_act_op.fused_train(x, w, w[:1], 1e-5, "relu", 1.0, 0), "bias must have shape [C] = [8], got [1]"),
    (lambda x, w: bn_act_op.fused_eval(x, w, w, w, w[:4], 1e-5, "relu", 1.0), "running_var must have shape [C] = [8]"),
    (lambda x, w: bn_act_op.fused_train(x[:0], w, w, 1e-5, "relu", 1.0, 0), "got an empty batch"),
    (lambda x, w: bn_act_op.fused_train(x, w, w, 1e-5, "tanh", 1.0, 0), "unknown activation 'tanh'"),
    (lambda x, w: bn_act_op.fused_train(x.double(), w, w, 1e-5, "relu", 1.0, 0),
     "expected a float16, bfloat16 or float32 input, got torch.float64"),
    (lambda x, w: bn_act_op.fused_eval(x.long(), w, w, w, w, 1e-5, "relu", 1.0),
     "expected a float16, bfloat16 or float32 input, got torch.int64"),
])
def test_ops_check_every_vector_and_the_batch(call, message):
    """The raw ops: the kernels read C values of bias and of the running statistics (a shorter
    vector was read past its end, unchecked before 2026-12-04) and divide by N (an empty batch was
    a ZeroDivisionError)."""
    x, w = make_input((2, 8, 3, 3), torch.float32), torch.ones(8, device=DEVICE)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        call(x, w)


@pytest.mark.parametrize("ghost", [0, 2])
def test_float64_runs_in_float64_and_integers_are_refused(ghost):
    """The kernels compute in fp32: an fp64 input took them and came out at fp32 precision (4e-5
    to 5e-5 off here, where the tolerance is 1e-9; the reference path, too, computed in fp32),
    and an integer one came out as integers (both before 2026-12-05). The module now runs fp64
    through its reference path in fp64 (equal to nn.BatchNorm2d in fp64 to rounding, gradients
    included) and refuses integers as nn.BatchNorm2d does, with one clear error."""
    torch.manual_seed(0)
    x = (torch.randn(4, 8, 3, 3, dtype=torch.float64, device=DEVICE) * 1e-3 + 1.0).requires_grad_()
    bn = BatchNormAct2d(8, act="identity", ghost_batch=ghost).to(DEVICE, torch.float64)
    bn.backend = "triton"
    plain = nn.BatchNorm2d(8).to(DEVICE, torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict(bn.state_dict())
    y = bn(x)
    if ghost:   # two groups of two images: nn.BatchNorm2d on each half
        y_ref = torch.cat([plain(half) for half in x.split(2)])
    else:
        y_ref = plain(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-9)
    dy = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0],
                               rtol=0, atol=1e-6)
    if not ghost:
        torch.testing.assert_close(bn.running_var, plain.running_var, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match=r"^BatchNormAct2d expects a floating-point input, got torch.int64$"):
        bn(x.detach().long())


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_affine_and_running_stats_switched_off_as_in_batchnorm2d(backend, affine, track, monkeypatch):
    """affine=False and track_running_stats=False, as nn.BatchNorm2d takes them (a TypeError before
    2026-12-04): the same state_dict keys, outputs, running statistics and input gradients, in
    training and in eval (batch statistics there too without running statistics)."""
    torch.manual_seed(3)
    bn = BatchNormAct2d(8, act="relu", affine=affine, track_running_stats=track).to(DEVICE)
    plain = nn.BatchNorm2d(8, affine=affine, track_running_stats=track).to(DEVICE)
    bn.backend = backend
    if backend == "triton":         # the op itself, never a silent fallback
        monkeypatch.setattr(bn_act_layer, "bn_act_reference", lambda *a, **k: pytest.fail("reference path taken"))
    assert bn.state_dict().keys() == plain.state_dict().keys()
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    plain.load_state_dict(bn.state_dict())
    for training in (True, False):
        bn.train(training), plain.train(training)
        x = make_input((3, 8, 4, 4), torch.float32, seed=int(training)).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = bn(x), F.relu(plain(x_ref))
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        dy = torch.randn_like(y)
        y.backward(dy), y_ref.backward(dy)
        torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
        for name, buf in plain.named_buffers():
            torch.testing.assert_close(dict(bn.named_buffers())[name], buf, atol=1e-6, rtol=1e-5)
