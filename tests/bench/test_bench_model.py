"""Benchmarks of one training step of each model, split into forward, backward and optimiser
step, and of TTA evaluation.

    pytest tests/bench/test_bench_model.py --benchmark-enable

Each phase is timed alone: backward's forward pass and the step's gradients are made in
untimed setup. Models are built as train.py builds them (training dtype, channels-last, BN in
fp32, the recipe's norm-activation), trained with train.py's loss and parameter groups.
"""
import pytest
import torch
import torch.nn.functional as F

from bench_support import ARCHS, DEVICE, DTYPE, SIZES, measure, model_config, synthetic_images, synthetic_labels
from fastres.evaluate import predict_logits
from fastres.model import build_model, to_training_dtype
from fastres.train import param_groups


def training_setup(arch: str):
    """(model, images, labels, cfg) for one batch of `arch` at this device's sizes."""
    cfg = model_config(arch)
    torch.manual_seed(0)
    model = build_model(cfg, SIZES.channels, 10, SIZES.image_size).to(DEVICE)
    to_training_dtype(model, DTYPE)
    x, y = synthetic_images(cfg.batch_size), synthetic_labels(cfg.batch_size)
    model.init_whitening(x)
    return model, x, y, cfg


def loss_of(model, x, y, cfg):
    logits = model(x).float()
    return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")


def info(cfg):
    return dict(arch=cfg.arch, batch=cfg.batch_size, width=cfg.width, image_size=SIZES.image_size)


@pytest.mark.benchmark(group="model-forward")
@pytest.mark.parametrize("arch", ARCHS)
def test_forward(benchmark, arch):
    """Training-mode forward (batch statistics, autograd graph recorded), as in the loop."""
    model, x, y, cfg = training_setup(arch)
    logits = measure(benchmark, lambda: model(x), **info(cfg))
    assert logits.shape == (cfg.batch_size, 10)


@pytest.mark.benchmark(group="model-backward")
@pytest.mark.parametrize("arch", ARCHS)
def test_backward(benchmark, arch):
    model, x, y, cfg = training_setup(arch)

    def forward():
        model.zero_grad(set_to_none=True)              # as the loop does: fresh gradient buffers
        return (loss_of(model, x, y, cfg),)

    measure(benchmark, lambda loss: loss.backward(), setup=forward, **info(cfg))
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.benchmark(group="model-step")
@pytest.mark.parametrize("arch", ARCHS)
def test_optimizer_step(benchmark, arch):
    """SGD (Nesterov momentum, per-group LR and decay) over every parameter; gradients made once."""
    model, x, y, cfg = training_setup(arch)
    groups = param_groups(model, cfg)
    opt = torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov)
    for g in opt.param_groups:
        g["lr"] = g["base_lr"]
    loss_of(model, x, y, cfg).backward()
    weight = groups[0]["params"][0]
    before = weight.detach().clone()
    measure(benchmark, opt.step, iterations=10, **info(cfg))          # ~0.2-1 ms a step on CPU
    assert not torch.equal(before, weight)


@pytest.mark.benchmark(group="tta")
@pytest.mark.parametrize("tta", [1, 2])
def test_tta_evaluation(benchmark, tta):
    """Test-set logits with mirror (1) or mirror x shift (2) TTA, the recipes' eval batch."""
    model, _, _, cfg = training_setup("resnet9")
    x_test = synthetic_images(SIZES.test_images, seed=1)
    logits = measure(benchmark, lambda: predict_logits(model, x_test, tta, SIZES.eval_batch),
                     rounds=max(SIZES.rounds // 2, 1), images=SIZES.test_images, eval_batch=SIZES.eval_batch, tta=tta, **info(cfg))
    assert logits.shape == (SIZES.test_images, 10) and torch.isfinite(logits).all()
