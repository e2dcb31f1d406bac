"""Tests of the myrtle-ladder arch (model.py): each of the seven steps of Myrtle.ai's backbone
study has the layers its docstring names, hand-counted parameters, and trains one step.

    OMP_NUM_THREADS=1 pytest tests/test_model_ladder.py
"""
import pytest
import torch
import torch.nn as nn

from fastres.config import Config
from fastres.errors import FastresError
from fastres.model import ClassifierHead, MyrtleLadder, build_model, count_parameters, model_flops

WIDTH = 1 / 16          # widths 4 / 8 / 16 / 16 (32 from step 5)


def ladder(step, **changes):
    return build_model(Config(arch="myrtle-ladder", ladder_step=step, width=WIDTH, act="relu", **changes),
                       in_channels=3, num_classes=10, image_size=32)


def ladder_params(step, c=3, k=10):
    """Written from the step table in MyrtleLadder's docstring, not from the code."""
    a, b, cc = 4, 8, 16
    d = 32 if step >= 5 else 16
    kernel = 1 if step <= 2 else 3
    bns_per_stage = 2 if step == 1 else 1
    n = c * a * 9 + 2 * a                                                   # prep
    for c_in, c_out in ((a, b), (b, cc), (cc, d)):
        n += c_in * c_out * kernel * kernel + bns_per_stage * 2 * c_out
    if step >= 7:
        n += 2 * (b * b * 9 + 2 * b) + 2 * (d * d * 9 + 2 * d)             # two residual blocks
    return n + d * k                                                        # linear, no bias


@pytest.mark.parametrize("step", range(1, 8))
def test_each_step_has_the_documented_layers(step):
    torch.manual_seed(0)
    model = ladder(step)
    assert count_parameters(model) == ladder_params(step)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    stage_convs = [s[0] for s in model.stages]
    assert all(c.kernel_size == ((1, 1) if step <= 2 else (3, 3)) for c in stage_convs)
    assert all(c.stride == ((2, 2) if step <= 3 else (1, 1)) for c in stage_convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == (3 if step >= 4 else 0)
    assert len(convs) == 4 + (4 if step >= 7 else 0)
    head = model.head
    assert isinstance(head, ClassifierHead) and head.pool == ("max" if step >= 5 else "avg")
    assert head.linear.in_features == (32 if step >= 5 else 16)
    for size in (28, 32):
        x = torch.randn(2, 3, size, size)
        assert model(x).shape == (2, 10)


def test_step_seven_matches_resnet9_up_to_pool_position():
    cfg = dict(width=WIDTH, act="relu")
    resnet9 = build_model(Config(arch="resnet9", **cfg), 3, 10, 32)
    step7 = ladder(7)
    assert count_parameters(step7) == count_parameters(resnet9)
    assert model_flops(step7, 3, 32) == model_flops(resnet9, 3, 32)
    # The pool follows the BN-act in the 2018 ladder (resnet9 pools before the BN).
    assert isinstance(step7.stages[0][-1], nn.MaxPool2d)


def test_flops_follow_the_ladder():
    flops = [model_flops(ladder(s), 3, 32) for s in range(1, 8)]
    assert flops[0] == flops[1]                       # step 2 removes only a BN-act
    assert flops[2] > flops[1]                        # 3x3 instead of 1x1 kernels
    assert flops[3] > 2.5 * flops[2]                  # stage convs run at stride 1 before the pool: 4x pixels
    assert flops[6] > flops[5] == flops[4] > flops[3]


def test_bn_scale_init_uniform_and_one():
    torch.manual_seed(0)
    uniform = [m.weight for m in ladder(6, bn_scale_init="uniform").modules() if isinstance(m, nn.BatchNorm2d)]
    ones = [m.weight for m in ladder(6).modules() if isinstance(m, nn.BatchNorm2d)]
    w = torch.cat([p.detach() for p in uniform])
    assert w.min() >= 0 and w.max() <= 1 and w.std() > 0.1
    assert all(bool((p == 1).all()) for p in ones)


def test_bn_scale_init_applies_to_other_archs_and_default_is_unchanged():
    torch.manual_seed(0)
    default = build_model(Config(arch="resnet18", width=WIDTH), 1, 10, 28)
    assert all(bool((m.weight == 1).all()) for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    uniform = build_model(Config(arch="resnet18", width=WIDTH, bn_scale_init="uniform"), 1, 10, 28)
    assert not all(bool((m.weight == 1).all()) for m in uniform.modules() if isinstance(m, nn.BatchNorm2d))


def test_step_one_repeats_the_bn_act_and_step_two_does_not():
    norm_counts = [sum(isinstance(m, nn.BatchNorm2d) for m in ladder(s).modules()) for s in (1, 2)]
    assert norm_counts == [1 + 3 * 2, 1 + 3]


def test_one_training_step_reduces_nothing_to_nan():
    torch.manual_seed(0)
    for step in (1, 4, 7):
        model = ladder(step)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("bad", [0, 8])
def test_bad_ladder_step_is_a_clear_error(bad):
    with pytest.raises(FastresError, match="--ladder-step must be 1..7"):
        Config(arch="myrtle-ladder", ladder_step=bad).validate()
    with pytest.raises(FastresError, match="--ladder-step must be 1..7"):
        build_model(Config(arch="myrtle-ladder", ladder_step=bad), 3, 10, 32)
    with pytest.raises(FastresError, match="bn-scale-init"):
        Config(bn_scale_init="zeros").validate()
    assert MyrtleLadder.__doc__.count("\n        ") >= 7
