"""Tests of fastres/model.py: shapes, hand-counted parameters and FLOPs, whitening, dirac init,
norm plumbing, dtypes and gradients. Small widths and batches: the file runs in seconds on CPU.

    OMP_NUM_THREADS=1 pytest tests/test_model.py
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastres.config import STAGES, Config
from fastres.errors import FastresError
from fastres.kernels import BatchNormAct2d
from fastres.model import build_model, count_parameters, model_flops, to_training_dtype

TINY = 1 / 16
# (arch, whiten) pairs; whitening is optional only for resnet9
ARCHS = [("resnet9", False), ("resnet9", True), ("airbench", False), ("resnet18", False)]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def tiny(arch, whiten=False, **changes):
    return Config(arch=arch, whiten=whiten, width=TINY, **changes)


def correlated_images(n, c, size, offset=0.5):
    """Gaussian images with correlated neighbouring pixels and channels, and a non-zero mean."""
    z = torch.randn(n, c, size, size)
    x = z + 0.3 * z.roll(1, -1) + 0.2 * z.roll(1, -2)
    mix = torch.eye(c) + 0.3 * torch.ones(c, c)
    return torch.einsum("ij,njhw->nihw", mix, x) + offset


# --- hand counts, written from the layer shapes in the task description -----------------------
def conv(c_in, c_out, k):
    return c_in * c_out * k * k


def bn(c):
    return 2 * c


def resnet9_params(c, k, width=1.0, whiten=False):
    a, b, cc, d = (max(1, round(w * width)) for w in (64, 128, 256, 512))
    n = conv(c, 9 * c, 3) if whiten else 0
    n += conv(9 * c if whiten else c, a, 3) + bn(a)                  # prep
    n += conv(a, b, 3) + bn(b) + 2 * (conv(b, b, 3) + bn(b))        # layer1 + residual
    n += conv(b, cc, 3) + bn(cc)                                     # layer2
    n += conv(cc, d, 3) + bn(d) + 2 * (conv(d, d, 3) + bn(d))       # layer3 + residual
    return n + d * k                                                 # linear, no bias


def airbench_params(c, k, width=1.0, widths=(64, 256, 256)):
    a, b, cc = (max(1, round(w * width)) for w in widths)
    n = conv(c, 8 * c, 2) + 8 * c                                    # whitening weight + bias
    for c_in, c_out in ((8 * c, a), (a, b), (b, cc)):
        n += conv(c_in, c_out, 3) + conv(c_out, c_out, 3) + 2 * bn(c_out)
    return n + cc * k


def resnet18_params(c, k, width=1.0):
    w = [max(1, round(x * width)) for x in (64, 128, 256, 512)]
    n = conv(c, w[0], 7) + bn(w[0])
    c_in = w[0]
    for stage, c_out in enumerate(w):
        for i in range(2):
            n += conv(c_in, c_out, 3) + conv(c_out, c_out, 3) + 2 * bn(c_out)
            if stage > 0 and i == 0:
                n += conv(c_in, c_out, 1)                            # 1x1 shortcut
            c_in = c_out
    return n + w[3] * k + k                                          # linear with bias


@pytest.mark.parametrize("arch,whiten", ARCHS)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
@pytest.mark.parametrize("classes", [10, 7])
def test_output_shape(arch, whiten, channels, size, classes):
    model = build_model(tiny(arch, whiten), channels, classes, size)
    x = torch.randn(3, channels, size, size)
    model.init_whitening(x)
    assert model(x).shape == (3, classes)
    model.eval()
    assert model(x[:1]).shape == (1, classes)


@pytest.mark.parametrize("channels,classes", [(3, 10), (1, 7)])
@pytest.mark.parametrize("width", [1.0, 0.3])
def test_parameter_counts(channels, classes, width):
    def count(arch, whiten=False):
        return count_parameters(build_model(Config(arch=arch, width=width, whiten=whiten), channels, classes, 32))
    assert count("resnet9") == resnet9_params(channels, classes, width)
    assert count("resnet9", whiten=True) == resnet9_params(channels, classes, width, whiten=True)
    assert count("airbench") == airbench_params(channels, classes, width)
    assert count("resnet18") == resnet18_params(channels, classes, width)


def test_published_sizes():
    assert resnet9_params(3, 10) == 6_573_120          # Myrtle.ai ResNet-9: ~6.57M
    assert airbench_params(3, 10) == 1_972_792          # airbench: ~2M
    assert resnet18_params(1, 10) == 11_173_578         # ResNet-18 (bias-free convs): ~11.2M


def test_airbench96_size_flops_and_residual_layout():
    # airbench96.py: widths 128/512/512, three 3x3 convs per group (10 convs with the whitening).
    def params(c, k, widths=(128, 512, 512)):
        n = conv(c, 8 * c, 2) + 8 * c
        for c_in, c_out in zip((8 * c,) + widths, widths):
            n += conv(c_in, c_out, 3) + 2 * conv(c_out, c_out, 3) + 3 * bn(c_out)
        return n + widths[-1] * k

    model = build_model(Config(arch="airbench96", act="gelu"), 3, 10, 32)
    assert count_parameters(model) == params(3, 10) == 12_721_208
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 10
    # MACs by hand: the first conv of a group runs before its pool, the other two after it.
    macs = 31 * 31 * 24 * 12
    for c_in, c, side in ((24, 128, 31), (128, 512, 15), (512, 512, 7)):
        macs += side * side * c * c_in * 9 + 2 * (side // 2) ** 2 * c * c * 9
    macs += 512 * 10
    assert model_flops(model, 3, 32) == 2 * macs          # 1.23 GFLOPs (airbench96.py: 7.46 PFLOPs / 40 epochs)
    g = model.group2
    assert [b[-1].act for b in (g.conv1, g.conv2, g.conv3)] == ["gelu", "gelu", "identity"]
    assert g.act.act == "gelu"                                         # after the residual add
    x = torch.randn(4, 128, 15, 15)
    with torch.no_grad():
        h = g.conv1(x)
        assert torch.allclose(g(x), F.gelu(h + g.conv3(g.conv2(h))), atol=1e-6)
    # dirac init: with identity BNs (eval, fresh statistics) every conv passes its first input
    # channels through, so there h = act(pool(x)) and the group gives act(h + h)
    small = build_model(Config(arch="airbench96", act="relu", width=1 / 8), 3, 10, 32).group2.eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = small(x)
    pooled = F.max_pool2d(x, 2)
    assert torch.allclose(y[:, :16], 2 * F.relu(pooled), atol=1e-4)


def test_explicit_stage_widths():
    # airbench95's net: widths 128/384/384 (--widths), still scaled by --width.
    cfg = Config(arch="airbench", widths="128, 384,384")
    cfg.validate()
    assert count_parameters(build_model(cfg, 3, 10, 32)) == airbench_params(3, 10, widths=(128, 384, 384))
    half = build_model(cfg.replace(width=0.5), 3, 10, 32)
    assert count_parameters(half) == airbench_params(3, 10, width=0.5, widths=(128, 384, 384))
    r9 = build_model(Config(arch="resnet9", widths="32,64,128,256"), 3, 10, 32)
    assert r9.prep[0].out_channels == 32 and r9.head.linear.in_features == 256
    for arch, widths in (("airbench", "128,384"), ("resnet9", "64,128,256,0"), ("resnet18", "a,b,c,d")):
        with pytest.raises(FastresError, match="--widths for " + arch):
            Config(arch=arch, widths=widths).validate()


def test_width_multiplier_keeps_one_channel():
    model = build_model(Config(arch="resnet9", width=0.001), 3, 10, 32)
    assert model.prep[0].out_channels == 1 and model.head.linear.in_features == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def whitened_covariance(x, whiten):
    y = F.conv2d(x, whiten.weight, whiten.bias)      # unpadded: every output is a full patch
    return y.transpose(0, 1).flatten(1)               # (channels, samples)


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet9_whitening(channels):
    model = build_model(tiny("resnet9", whiten=True), channels, 10, 32)
    w = model.whiten
    assert w.kernel_size == (3, 3) and w.out_channels == 9 * channels and w.bias is None
    assert not w.weight.requires_grad
    x = correlated_images(200, channels, 32)
    assert torch.cov(F.unfold(x, 3).transpose(0, 1).flatten(1)).sub(torch.eye(9 * channels)).abs().max() > 0.2
    model.init_whitening(x)
    cov = torch.cov(whitened_covariance(x, w))
    assert torch.allclose(cov, torch.eye(9 * channels), atol=0.05)   # eps=1e-2 shrinks small eigenvalues
    assert model.whiten(x).shape == (200, 9 * channels, 32, 32)      # padded: size kept


@pytest.mark.parametrize("channels", [1, 3])
def test_airbench_whitening(channels):
    model = build_model(tiny("airbench"), channels, 10, 32)
    w, d = model.whiten, 4 * channels
    assert w.kernel_size == (2, 2) and w.padding == (0, 0) and w.out_channels == 2 * d
    assert not w.weight.requires_grad and w.bias.requires_grad
    x = correlated_images(200, channels, 32)
    model.init_whitening(x)
    assert torch.equal(w.weight[d:], -w.weight[:d]) and torch.equal(w.bias[d:], -w.bias[:d])
    y = whitened_covariance(x, w)
    assert torch.allclose(torch.cov(y[:d]), torch.eye(d), atol=0.02)
    assert y.mean(1).abs().max() < 0.02                               # bias centres the outputs
    assert model.whiten(x).shape == (200, 2 * d, 31, 31)


def test_whitening_uses_first_images_only():
    model = build_model(tiny("airbench"), 3, 10, 32)
    n = model.whiten.n_images
    x = correlated_images(n + 10, 3, 8)
    model.init_whitening(x[:n])
    expected = model.whiten.weight.clone()
    x[n:] = 1e3                            # images past the limit must not enter the statistics
    model.init_whitening(x)
    assert torch.equal(model.whiten.weight, expected)


def test_layouts():
    cfg = tiny("resnet9", ghost_batch=32, act="gelu", logit_scale=0.125)
    r9 = build_model(cfg, 3, 10, 32)
    conv, pool, norm = r9.layer1[0]                                  # Myrtle: pool before BN
    assert isinstance(pool, nn.MaxPool2d) and norm.ghost_batch == 32 and norm.act == "gelu"
    assert r9.head.pool == "max" and r9.head.scale == 0.125 and r9.head.linear.bias is None
    ab = build_model(cfg.replace(arch="airbench", logit_scale=1 / 9), 3, 10, 32)
    assert ab.head.pool == "max" and ab.head.scale == 1 / 9 and ab.head.linear.bias is None
    assert ab.whiten_act.act == "gelu" and ab.group1[0][2].act == "gelu"
    record = build_model(cfg.replace(arch="airbench", act="silu", whiten_act="gelu"), 3, 10, 32)
    assert record.whiten_act.act == "gelu" and record.group1[0][2].act == "silu"   # the 2025 record
    r18 = build_model(cfg.replace(arch="resnet18"), 3, 10, 32)
    assert r18.whiten is None and r18.head.pool == "avg" and r18.head.scale == 1
    assert r18.head.linear.bias is not None and r18.stem[0].kernel_size == (7, 7)


def test_airbench_dirac_init():
    model = build_model(Config(arch="airbench", width=1 / 8), 3, 10, 32)
    for conv in (model.group1[0][0], model.group2[0][0], model.group3[1][0]):
        n = min(conv.in_channels, conv.out_channels)
        x = torch.randn(2, conv.in_channels, 6, 6)
        with torch.no_grad():
            y = conv(x)
        assert torch.equal(y[:, :n], x[:, :n])                      # identity maps
        if conv.out_channels > n:
            assert conv.weight[n:].abs().sum() > 0                   # the rest keep default init


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("arch,whiten", ARCHS)
def test_frozen_bn_scale_and_backward(arch, whiten):
    model = build_model(tiny(arch, whiten, bn_freeze_scale=True), 3, 10, 32)
    x = torch.randn(4, 3, 32, 32)
    model.init_whitening(x)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    for m in bn_modules(model):
        assert not m.weight.requires_grad and m.weight.grad is None and m.bias.grad is not None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trainable)
    if model.whiten is not None:
        assert model.whiten.weight.grad is None


@pytest.mark.parametrize("arch", ["resnet9", "airbench", "resnet18"])
def test_bn_state_dict_loads_into_plain_batchnorm(arch):
    model = build_model(tiny(arch), 3, 10, 32)
    model(torch.randn(4, 3, 32, 32))                                 # move the running stats
    layers = bn_modules(model)
    assert layers and all(isinstance(m, BatchNormAct2d) for m in layers)
    for m in layers:
        plain = nn.BatchNorm2d(m.num_features)
        plain.load_state_dict(m.state_dict())                        # strict
        assert torch.equal(plain.running_mean, m.running_mean)


def test_resnet18_block_norms():
    block = build_model(tiny("resnet18", act="relu"), 3, 10, 32).blocks[2]
    assert block.bn1.act == "relu" and block.bn2.act == "identity"   # act applied after the add
    assert block.shortcut.kernel_size == (1, 1) and block.shortcut.stride == (2, 2)


@pytest.mark.parametrize("arch", ["resnet9", "airbench", "resnet18"])
def test_pluggable_norm_act(arch):
    model = build_model(tiny(arch), 3, 10, 32, norm_act=lambda c: nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()))
    assert not any(isinstance(m, BatchNormAct2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["resnet9", "airbench", "resnet18"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_training_dtype(arch, dtype):
    model = to_training_dtype(build_model(tiny(arch), 3, 10, 32), dtype)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.weight.dtype == dtype
        if isinstance(m, nn.Conv2d):
            assert m.weight.is_contiguous(memory_format=torch.channels_last)
    for m in bn_modules(model):
        assert all(t.dtype == torch.float32 for t in (m.weight, m.bias, m.running_mean, m.running_var))
    x = torch.randn(4, 3, 32, 32).to(dtype=dtype, memory_format=torch.channels_last)
    model.init_whitening(x)
    logits = model(x)
    assert logits.dtype == dtype and logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_model_flops_hand_count_tiny_net():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 4, 2, stride=2, groups=2),
                        nn.Flatten(), nn.Linear(16, 3))
    # conv1: 2*4*4 outputs x 9 MACs; conv2 (grouped): 4*2*2 outputs x 1*2*2; linear 16*3
    assert model_flops(net, 1, 4) == 2 * (32 * 9 + 16 * 4 + 48)


def test_model_flops_resnet9():
    model = build_model(Config(arch="resnet9", width=1 / 64), 3, 10, 32)
    a, b, c, d = 1, 2, 4, 8
    macs = 9 * (32 * 32 * (3 * a + a * b) + 16 * 16 * (2 * b * b + b * c) + 8 * 8 * c * d + 4 * 4 * 2 * d * d)
    model.train()
    stats = [m.running_mean.clone() for m in bn_modules(model)]
    assert model_flops(model, 3, 32) == 2 * (macs + d * 10)
    assert model.training                                               # mode restored
    assert all(torch.equal(s, m.running_mean) for s, m in zip(stats, bn_modules(model)))


def test_myrtle_recipe_builds_myrtles_final_net():
    """cifar10-myrtle as Myrtle's final 10-epoch run (bag_of_tricks.ipynb): the fixed 3x3
    whitening (27 channels, no bias), then a learnable 1x1 prep conv to 64 channels, ghost BN with
    frozen scales, CELU(0.3), logits x 1/16, no cutout. Other resnet9 configs keep the 3x3 prep
    conv, whose MACs test_model_flops_resnet9 counts."""
    from fastres.config import get_recipe
    cfg = get_recipe("cifar10-myrtle").config
    model = build_model(cfg, 3, 10, 32)
    assert model.whiten.out_channels == 27 and model.whiten.bias is None
    prep = model.prep[0]
    assert (prep.in_channels, prep.out_channels, prep.kernel_size, prep.padding) == (27, 64, (1, 1), (0, 0))
    assert prep.bias is None and prep.weight.requires_grad
    assert model.head.scale == 1 / 16 and cfg.cutout == 0 and cfg.ghost_batch == 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    three = build_model(cfg.replace(prep_kernel=3), 3, 10, 32)
    assert three.prep[0].kernel_size == (3, 3)
    # per pixel of the 32x32 map, the 1x1 conv costs 27 x 64 MACs where the 3x3 one costs 9 x that
    assert model_flops(three, 3, 32) - model_flops(model, 3, 32) == 2 * 32 * 32 * 8 * 27 * 64
    for bad in ({"prep_kernel": 5}, {"prep_kernel": 1, "arch": "airbench"}):
        with pytest.raises(FastresError, match="prep-kernel"):
            cfg.replace(**bad).validate()


def test_build_errors():
    with pytest.raises(FastresError):
        build_model(Config(arch="resnet18", whiten=True), 3, 10, 32)
    with pytest.raises(FastresError):
        build_model(Config(arch="resnet9"), 3, 10, 8)


def test_every_recipe_builds_its_model():
    # Each registered recipe's config validates and builds (at its dataset's shape), so a GPU
    # session never finds a broken recipe.
    from fastres.config import RECIPES
    shapes = {"cifar10": (3, 32, 10), "fashion-mnist": (1, 28, 10)}
    for name, recipe in RECIPES.items():
        cfg = recipe.config
        cfg.validate()
        c, size, k = shapes.get(cfg.dataset, (3, 32, 10))
        model = build_model(cfg.replace(width=cfg.width * 0.125), c, k, size)
        assert model(torch.randn(2, c, size, size)).shape == (2, k), name
    assert RECIPES["cifar10-95"].config.widths == "128,384,384"


@pytest.mark.parametrize("arch", sorted(STAGES))
def test_bn_settings_reach_every_norm_module(arch):
    """The config's BN settings reach every norm of every architecture: momentum, eps, ghost
    batch, frozen scale, CELU alpha and the fused switch on the BatchNormAct2d modules, momentum
    and eps on the plain BatchNorm2d norms that a custom norm_act leaves before residual adds."""
    cfg = tiny(arch, act="celu", bn_momentum=0.37, bn_eps=1e-3, ghost_batch=16, bn_freeze_scale=True,
               celu_alpha=0.2, fused_bn=False)
    mods = bn_modules(build_model(cfg, 3, 10, 32))
    assert mods and all(isinstance(m, BatchNormAct2d) for m in mods)
    for m in mods:
        assert (m.momentum, m.eps, m.ghost_batch, m.alpha, m.fused) == (0.37, 1e-3, 16, 0.2, False)
        assert not m.weight.requires_grad and m.bias.requires_grad
        assert m.act in ("celu", "identity")
    assert any(m.act == "celu" for m in mods)
    class ActBN(nn.BatchNorm2d):
        pass
    custom = build_model(cfg, 3, 10, 32, norm_act=lambda c: nn.Sequential(ActBN(c), nn.ReLU()))
    residual = [m for m in bn_modules(custom) if type(m) is nn.BatchNorm2d]
    assert all((m.momentum, m.eps) == (0.37, 1e-3) for m in residual)
    assert bool(residual) == (arch in ("airbench96", "resnet18"))  # the archs with a norm before an add
