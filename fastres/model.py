"""The three architectures fastres trains, built from a Config by `build_model`.

    resnet9   Myrtle.ai ResNet-9 ("bag of tricks"), optional fixed 3x3 PCA patch whitening
    airbench  airbench-style net: 2x2 +/- patch whitening, three dirac-initialised conv groups
    airbench96  airbench96's wider net: 128/512/512, three convs per group with a residual add
    resnet18  ResNet-18 in the Dive into Deep Learning layout (the seed's baseline)
    myrtle-ladder  the seven steps of Myrtle.ai's backbone study, picked by cfg.ladder_step

Every conv is followed by a pluggable norm-act (default: fastres.kernels.BatchNormAct2d, the
fused BN+activation), widths are scaled by cfg.width (tiny CPU variants for tests), and the input
channels / image size (28 or 32) / class count come from the dataset. Each model has an attribute
`whiten` (the whitening nn.Conv2d, or None) and a method `init_whitening(train_x)`; call it on the
normalised training images before training (it is cheap tensor work, so it sits inside the timer).

Measured at width 1, 3-channel 32x32 input, 10 classes (model_flops = forward FLOPs per image):
    resnet9   6,573,120 parameters (6,587,673 with whitening)   0.759 GFLOPs (28x28 1-ch: 0.548)
    airbench  1,972,792 parameters                              0.236 GFLOPs
    airbench96 12,721,208 parameters                            1.230 GFLOPs
    resnet18 11,179,850 parameters (1-channel: 11,173,578)      0.074 GFLOPs (28x28 1-ch: 0.066)
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Config
from .errors import FastresError
from .kernels import BatchNormAct2d, activation

NormFactory = Callable[[int], nn.Module]    # channels -> module applied after a conv


def scaled(width: int, multiplier: float) -> int:
    return max(1, round(width * multiplier))


def stage_widths(cfg: Config, default: tuple[int, ...]) -> list[int]:
    """The stages' channel widths: cfg.widths (comma-separated) or the arch's default, times
    cfg.width."""
    base = [int(w) for w in cfg.widths.split(",")] if cfg.widths else default
    if len(base) != len(default):
        raise FastresError(f"--widths for {cfg.arch} must be {len(default)} integers, got {cfg.widths!r}")
    return [scaled(c, cfg.width) for c in base]


def conv3x3(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> nn.Conv2d:
    # No bias anywhere before a BN: the BN's own bias makes it redundant. Other odd k: k x k.
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


class Activation(nn.Module):
    """The activation named in the Config, for places not directly after a norm."""

    def __init__(self, act: str, alpha: float = 1.0):
        super().__init__()
        self.act, self.alpha = act, alpha

    def forward(self, x):
        return activation(x, self.act, self.alpha)

    def extra_repr(self):
        return f"act={self.act}"


def patch_covariance(x: torch.Tensor, k: int, chunk: int = 2048):
    """Mean (d,) and covariance (d, d) in fp64 of all k x k patches of x (N, C, H, W), d = C*k*k.

    Patches are unfolded a chunk of images at a time (10k CIFAR images would be ~1 GB at once);
    the feature order (c, kh, kw) is that of a conv weight flattened per filter."""
    d = x.shape[1] * k * k
    second = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    total = torch.zeros(d, dtype=torch.float64, device=x.device)
    count = 0
    for part in x.split(chunk):
        p = F.unfold(part.float(), k)                                  # (n, d, patches per image)
        second += (p @ p.transpose(1, 2)).sum(0).double()              # batched: no transposed copy
        total += p.sum((0, 2)).double()
        count += p.shape[0] * p.shape[2]
    mean = total / count
    return mean, second / count - torch.outer(mean, mean)


class PatchWhitening(nn.Conv2d):
    """Fixed conv that PCA-whitens k x k input patches (weights set from data, never trained).

    Filter i projects a patch onto the i-th eigenvector of the patch covariance (largest first)
    and divides by sqrt(eigenvalue + eps), so whitened patches have ~identity covariance: the
    first layer then sees decorrelated unit-variance inputs (Myrtle.ai's "input patch whitening",
    3x3 / 27 channels from 10k images; airbench's 2x2 version from 5k images). `signed_pairs`
    appends the negated filters (airbench), so a following ReLU-like activation keeps both signs."""

    def __init__(self, in_channels: int, k: int, padding: int, eps: float, n_images: int,
                 signed_pairs: bool = False, bias: bool = False):
        d = in_channels * k * k
        super().__init__(in_channels, 2 * d if signed_pairs else d, k, padding=padding, bias=bias)
        self.eps, self.n_images, self.signed_pairs = eps, n_images, signed_pairs
        self.weight.requires_grad_(False)
        if bias:
            nn.init.zeros_(self.bias)

    @torch.no_grad()
    def init_from(self, train_x: torch.Tensor) -> None:
        # Statistics from unpadded patches: zero-padded border patches are not data.
        mean, cov = patch_covariance(train_x[: self.n_images], self.kernel_size[0])
        eigval, eigvec = torch.linalg.eigh(cov)                        # ascending
        eigval, eigvec = eigval.flip(0).clamp(min=0), eigvec.flip(1)
        filters = (eigvec / (eigval + self.eps).sqrt()).T             # (d, d), one filter per row
        if self.signed_pairs:
            filters = torch.cat([filters, -filters])
        self.weight.copy_(filters.reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.copy_(-(filters @ mean))       # start with zero-mean whitened outputs


class ClassifierHead(nn.Module):
    """Global pool -> linear -> logits x scale (Myrtle's x0.125 keeps the softmax soft early)."""

    def __init__(self, channels: int, num_classes: int, pool: str, bias: bool, scale: float = 1.0):
        super().__init__()
        self.pool, self.scale = pool, scale
        self.linear = nn.Linear(channels, num_classes, bias=bias)

    def forward(self, x):                                              # (N, C, H, W)
        pool = F.adaptive_max_pool2d if self.pool == "max" else F.adaptive_avg_pool2d
        logits = self.linear(pool(x, 1).flatten(1))                    # (N, classes)
        return logits if self.scale == 1 else logits * self.scale

    def extra_repr(self):
        return f"pool={self.pool}, scale={self.scale}"


class Classifier(nn.Module):
    """Shared interface: `whiten` (PatchWhitening or None) and init_whitening(train_x)."""

    def init_whitening(self, train_x: torch.Tensor) -> None:
        if self.whiten is not None:
            self.whiten.init_from(train_x)


class ConvNormAct(nn.Sequential):
    """3x3 (or k x k) conv -> [2x2 max-pool] -> norm-act. Myrtle.ai moved the pool before the BN:
    max-pool commutes with a per-channel increasing map, so this only changes which pixels the
    batch statistics see, and the BN+activation then run on 4x fewer pixels."""

    def __init__(self, c_in: int, c_out: int, norm_act: NormFactory, pool: bool = False, k: int = 3):
        layers = [conv3x3(c_in, c_out, k=k)] + ([nn.MaxPool2d(2)] if pool else []) + [norm_act(c_out)]
        super().__init__(*layers)


class Residual(nn.Module):
    """Myrtle.ai's residual block: x + two conv-norm-acts, same width."""

    def __init__(self, channels: int, norm_act: NormFactory):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, norm_act)
        self.conv2 = ConvNormAct(channels, channels, norm_act)

    def forward(self, x):                                              # (N, C, H, W)
        return x + self.conv2(self.conv1(x))


class ResNet9(Classifier):
    """Myrtle.ai ResNet-9: [whitening] -> prep 64 -> 128 (pool, residual) -> 256 (pool) -> 512
    (pool, residual) -> global max pool -> linear. 32x32: 32->16->8->4; 28x28: 28->14->7->3."""

    def __init__(self, cfg: Config, in_channels: int, num_classes: int, norm_act: NormFactory):
        super().__init__()
        w = stage_widths(cfg, (64, 128, 256, 512))
        self.whiten = (PatchWhitening(in_channels, 3, padding=1, eps=1e-2, n_images=10_000)
                       if cfg.whiten else None)
        # Myrtle's final net (bag_of_tricks.ipynb, whitening_block) replaces the 3x3 prep conv
        # by the fixed 3x3 whitening followed by a learnable 1x1 conv: cfg.prep_kernel = 1.
        self.prep = ConvNormAct(self.whiten.out_channels if cfg.whiten else in_channels, w[0], norm_act,
                                k=cfg.prep_kernel)
        self.layer1 = nn.Sequential(ConvNormAct(w[0], w[1], norm_act, pool=True), Residual(w[1], norm_act))
        self.layer2 = ConvNormAct(w[1], w[2], norm_act, pool=True)
        self.layer3 = nn.Sequential(ConvNormAct(w[2], w[3], norm_act, pool=True), Residual(w[3], norm_act))
        self.head = ClassifierHead(w[3], num_classes, "max", bias=False, scale=cfg.logit_scale)

    def forward(self, x):                                              # (N, C, H, W)
        if self.whiten is not None:
            x = self.whiten(x)                                         # (N, 9C, H, W)
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))


class MyrtleLadder(Classifier):
    """Myrtle.ai's architecture ladder (anchors.md, "backbone study"), step cfg.ladder_step:

        1 original backbone  prep 3x3 conv, then three stages of stride-2 1x1 conv -> BN-act ->
                             BN-act, widths 64/128/256/256, global average pool, linear
        2 no repeated BN-act the second BN-act of each stage removed
        3 3x3 convolutions   the stride-2 convs become 3x3 (padding 1)
        4 max-pool           stride-1 3x3 conv -> BN-act -> 2x2 max-pool
        5 global max pool    head pools with a global max, final stage 512 wide (doubled)
        6 (not architectural: BN scale init 1 + logits x0.125 are cfg.bn_scale_init and
                             cfg.logit_scale; the study sets them per row)
        7 residual           Myrtle's residual blocks after stages 1 and 3 = ResNet-9

    Our reading of the steps, where the source gives only their names: the backbone is what
    is left of the pre-activation ResNet-18 of the DAWNBench entry once its residual branches
    are removed, i.e. the stride-2 1x1 shortcut convs; each stage's shortcut followed the
    previous block's BN-act and was followed by the next block's pre-activation BN-act, hence
    the back-to-back pair that step 2 removes. "Final width doubled" at step 5 is read as the
    last stage going from 256 to ResNet-9's 512. The max-pool sits after the BN-act as in the
    2018 ladder (the later bag of tricks moved it before the BN, as arch=resnet9 does), so
    step 7 is ResNet-9 with that one difference. 32x32: 32->16->8->4; 28x28: 28->14->7->4
    (strided, steps 1-3) or 28->14->7->3 (max-pool)."""

    def __init__(self, cfg: Config, in_channels: int, num_classes: int, norm_act: NormFactory):
        super().__init__()
        step = cfg.ladder_step
        w = stage_widths(cfg, (64, 128, 256, 512 if step >= 5 else 256))
        self.whiten = None
        self.prep = ConvNormAct(in_channels, w[0], norm_act)
        self.stages = nn.ModuleList(self.stage(c_in, c_out, step, norm_act) for c_in, c_out in zip(w, w[1:]))
        self.residuals = nn.ModuleList(Residual(c, norm_act) if step >= 7 and i != 1 else nn.Identity()
                                       for i, c in enumerate(w[1:]))
        self.head = ClassifierHead(w[3], num_classes, "max" if step >= 5 else "avg", bias=False,
                                   scale=cfg.logit_scale)

    @staticmethod
    def stage(c_in: int, c_out: int, step: int, norm_act: NormFactory) -> nn.Sequential:
        if step >= 4:
            return nn.Sequential(conv3x3(c_in, c_out), norm_act(c_out), nn.MaxPool2d(2))
        k = 1 if step <= 2 else 3
        layers = [conv3x3(c_in, c_out, stride=2, k=k), norm_act(c_out)]
        return nn.Sequential(*layers, *([norm_act(c_out)] if step == 1 else []))

    def forward(self, x):                                              # (N, C, H, W)
        x = self.prep(x)                                               # (N, 64w, H, W)
        for stage, residual in zip(self.stages, self.residuals):
            x = residual(stage(x))                                     # (N, C', H/2, W/2)
        return self.head(x)


def dirac_init_(conv: nn.Conv2d) -> nn.Conv2d:
    """airbench: the first min(out, in) filters start as identity maps of their input channel
    (the rest keep the default init), so the plain conv stack starts near-residual without skips."""
    with torch.no_grad():
        n = min(conv.out_channels, conv.in_channels)
        nn.init.dirac_(conv.weight[:n])
    return conv


class ConvGroup(nn.Sequential):
    """airbench group: conv -> max-pool 2 -> norm-act -> conv -> norm-act, convs dirac-initialised."""

    def __init__(self, c_in: int, c_out: int, norm_act: NormFactory):
        super().__init__(ConvNormAct(c_in, c_out, norm_act, pool=True), ConvNormAct(c_out, c_out, norm_act))
        for block in self:
            dirac_init_(block[0])


class ResidualConvGroup(nn.Module):
    """airbench96 group: conv -> max-pool 2 -> norm-act, then two more conv-norms with a residual
    connection over them and the activation after the add (airbench96's 06/2024 layout):
    y = act(x + norm(conv(norm_act(conv(x))))) with x the first conv's output. Convs dirac-initialised."""

    def __init__(self, c_in: int, c_out: int, norm_act: NormFactory, norm: NormFactory, act: nn.Module):
        super().__init__()
        self.conv1 = ConvNormAct(c_in, c_out, norm_act, pool=True)
        self.conv2 = ConvNormAct(c_out, c_out, norm_act)
        self.conv3 = ConvNormAct(c_out, c_out, norm)
        self.act = act
        for block in (self.conv1, self.conv2, self.conv3):
            dirac_init_(block[0])

    def forward(self, x):                                              # (N, C, H, W)
        x = self.conv1(x)                                              # (N, C', H/2, W/2)
        return self.act(x + self.conv3(self.conv2(x)))


class AirbenchNet(Classifier):
    """airbench-style net. Whitening is part of the architecture (cfg.whiten is not consulted):
    2x2 unpadded conv, weights frozen, bias trainable (train.py freezes it after
    cfg.whiten_bias_epochs). 32x32: 31->15->7->3; 28x28: 27->13->6->3. airbench's final
    max-pool 3 is written as a global max pool: identical at 28 and 32 (the map is 3x3 there),
    and still one value per channel at other sizes. The activation after the whitening is
    cfg.whiten_act, default cfg.act (the 2025 record keeps GELU there and uses SiLU elsewhere).
    arch="airbench96" (airbench96.py): widths 128/512/512 and ResidualConvGroups (10 convs)."""

    def __init__(self, cfg: Config, in_channels: int, num_classes: int, norm_act: NormFactory,
                 norm: NormFactory):
        super().__init__()
        deep = cfg.arch == "airbench96"
        w = stage_widths(cfg, (128, 512, 512) if deep else (64, 256, 256))
        self.whiten = PatchWhitening(in_channels, 2, padding=0, eps=5e-4, n_images=5_000,
                                     signed_pairs=True, bias=True)
        self.whiten_act = Activation(cfg.whiten_act or cfg.act, cfg.celu_alpha)

        def group(c_in: int, c_out: int) -> nn.Module:
            if deep:
                return ResidualConvGroup(c_in, c_out, norm_act, norm, Activation(cfg.act, cfg.celu_alpha))
            return ConvGroup(c_in, c_out, norm_act)
        self.group1 = group(self.whiten.out_channels, w[0])
        self.group2 = group(w[0], w[1])
        self.group3 = group(w[1], w[2])
        self.head = ClassifierHead(w[2], num_classes, "max", bias=False, scale=cfg.logit_scale)

    def forward(self, x):                                              # (N, C, H, W)
        x = self.whiten_act(self.whiten(x))                            # (N, 8C, H-1, W-1)
        return self.head(self.group3(self.group2(self.group1(x))))


class BasicBlock(nn.Module):
    """D2L's residual block: y = act(norm(conv2(norm_act(conv1 x))) + shortcut(x)), with a
    stride-2 1x1 conv shortcut (no norm, as in D2L) when the block downsamples. Convs carry no
    bias (D2L's are redundant: a BN bias follows each, and bn2's bias absorbs the shortcut's)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm_act: NormFactory, norm: NormFactory,
                 act: nn.Module):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = norm_act(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = norm(c_out)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)
        self.act = act

    def forward(self, x):                                              # (N, C, H, W)
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))              # (N, C', H/s, W/s)
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(Classifier):
    """ResNet-18, D2L layout: 7x7/2 conv -> norm-act -> 3x3/2 max-pool -> 4 stages x 2 blocks
    (64, 128, 256, 512) -> global average pool -> linear with bias. No logit scale (D2L has
    none; cfg.logit_scale is not used). 28x28: 14->7->7,4,2,1; 32x32: 16->8->8,4,2,1."""

    def __init__(self, cfg: Config, in_channels: int, num_classes: int, norm_act: NormFactory,
                 norm: NormFactory):
        super().__init__()
        w = stage_widths(cfg, (64, 128, 256, 512))
        self.whiten = None
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 7, stride=2, padding=3, bias=False),
                                  norm_act(w[0]), nn.MaxPool2d(3, stride=2, padding=1))
        blocks, c_in = [], w[0]
        for stage, c in enumerate(w):
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                act = Activation(cfg.act, cfg.celu_alpha)      # after the residual add
                blocks.append(BasicBlock(c_in, c, stride, norm_act, norm, act))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(w[3], num_classes, "avg", bias=True)

    def forward(self, x):                                              # (N, C, H, W)
        return self.head(self.blocks(self.stem(x)))


def default_norm_act(cfg: Config, act: str | None = None) -> NormFactory:
    return functools.partial(BatchNormAct2d, act=cfg.act if act is None else act, alpha=cfg.celu_alpha,
                             eps=cfg.bn_eps, momentum=cfg.bn_momentum, ghost_batch=cfg.ghost_batch,
                             freeze_scale=cfg.bn_freeze_scale, fused=cfg.fused_bn)


def build_model(cfg: Config, in_channels: int, num_classes: int, image_size: int,
                norm_act: NormFactory | None = None, norm: NormFactory | None = None) -> Classifier:
    """The model for cfg.arch; forward(x (N, in_channels, image_size, image_size)) -> logits (N, classes).

    norm_act: factory channels -> module used after every conv (default: BatchNormAct2d from cfg).
    norm: the activation-free norm before a residual add (ResNet-18, airbench96; default: BatchNormAct2d with
    act="identity", or plain nn.BatchNorm2d when a custom norm_act is given)."""
    if image_size < 16:     # the datasets are 28 or 32; every arch still has a 1x1 map at 16
        raise FastresError(f"images must be at least 16 px on each side for {cfg.arch}; the shorter side is "
                           f"{image_size} px")
    if norm is None:
        norm = (default_norm_act(cfg, act="identity") if norm_act is None else
                functools.partial(nn.BatchNorm2d, eps=cfg.bn_eps, momentum=cfg.bn_momentum))
    norm_act = norm_act or default_norm_act(cfg)
    if cfg.arch == "resnet9":
        model = ResNet9(cfg, in_channels, num_classes, norm_act)
    elif cfg.arch in ("airbench", "airbench96"):
        model = AirbenchNet(cfg, in_channels, num_classes, norm_act, norm)
    elif cfg.arch == "resnet18":
        if cfg.whiten:
            raise FastresError("--whiten is for resnet9 (airbench always whitens); resnet18 has no whitening")
        model = ResNet18(cfg, in_channels, num_classes, norm_act, norm)
    elif cfg.arch == "myrtle-ladder":
        if cfg.whiten:
            raise FastresError("--whiten is for resnet9; the myrtle-ladder steps have no whitening")
        if not 1 <= cfg.ladder_step <= 7:
            raise FastresError(f"--ladder-step must be 1..7, got {cfg.ladder_step}")
        model = MyrtleLadder(cfg, in_channels, num_classes, norm_act)
    else:
        raise FastresError(f"unknown arch {cfg.arch!r}; choose resnet9, airbench, airbench96, resnet18 or myrtle-ladder")
    if cfg.bn_scale_init == "uniform":
        # PyTorch <= 0.4 initialised BN scales U[0, 1]; Myrtle's ladder step 6 changed it to 1.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                with torch.no_grad():
                    m.weight.uniform_(0, 1)
    return model


def to_training_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Convs/linear in `dtype`, every BatchNorm kept in fp32 (as airbench does: fp16 statistics
    lose precision), channels_last memory format (tensor-core convs). Modifies model in place."""
    model.to(dtype=dtype, memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.float()
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_flops(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Forward FLOPs per image: 2 x multiply-accumulates of every Conv2d and Linear, read from
    their output shapes by forward hooks on a 1-image eval forward (norms, pools, activations
    are not counted). Pass the uncompiled model: hooks need eager execution."""
    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    try:
        model.eval()   # a 1-image batch has no batch statistics
        probe = layers[0].weight
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size, device=probe.device, dtype=probe.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2 * macs
