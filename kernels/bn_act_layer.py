"""BatchNormAct2d: training-mode BatchNorm2d fused with its activation.

A drop-in `nn.BatchNorm2d` subclass (same parameters, buffers and state_dict keys) that applies
an activation after the normalisation, optionally with ghost batch norm (statistics per group of
`ghost_batch` images) and a frozen scale. This file holds the pure-PyTorch reference path, used on
CPU and whenever the fused Triton path is unavailable or switched off with `use_reference(True)`;
the Triton path (bn_act_op.py) runs on CUDA tensors of fp16, bf16 or fp32 (fp64 takes the
reference path, computed in fp64). Tests: `OMP_NUM_THREADS=1 pytest tests/test_bn_act.py`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # CPU-only installs may lack triton: the reference path still works there.
    from . import bn_act_op
except ImportError:  # pragma: no cover
    bn_act_op = None

ACTIVATIONS = ("identity", "relu", "celu", "gelu", "silu")


def activation(z: torch.Tensor, act: str, alpha: float = 1.0) -> torch.Tensor:
    if act == "identity":
        return z
    if act == "relu":
        return F.relu(z)
    if act == "celu":
        return F.celu(z, alpha)
    if act == "gelu":
        return F.gelu(z)
    if act == "silu":
        return F.silu(z)
    raise ValueError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The reference's arithmetic precision: float64 for a float64 input, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def ghost_batch_stats(x: torch.Tensor, ghost_batch: int):
    """Per-group mean and biased variance of x [N, C, H, W] for groups of `ghost_batch` images
    (the last group may be smaller), in compute_dtype(x). Returns (mean [G, C], var [G, C], group
    index [N], rows per group [G, 1]). Shapes depend only on N and ghost_batch (no .item()), so
    torch.compile traces it without a graph break."""
    n, c = x.shape[:2]
    groups = -(-n // ghost_batch)
    group = torch.arange(n, device=x.device) // ghost_batch
    xf = x.to(compute_dtype(x)).flatten(2)                        # (N, C, HW)
    first = torch.arange(groups, device=x.device) * ghost_batch
    count = ((n - first).clamp(max=ghost_batch) * xf.shape[2]).to(xf.dtype)[:, None]
    mean = xf.new_zeros(groups, c).index_add_(0, group, xf.sum(2)) / count
    centred = xf - mean[group][:, :, None]
    var = xf.new_zeros(groups, c).index_add_(0, group, centred.square().sum(2)) / count
    return mean, var, group, count


def bn_act_reference(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
                     eps: float, act: str = "identity", alpha: float = 1.0, ghost_batch: int = 0):
    """Reference BatchNorm2d + activation in fp32 (fp64 for an fp64 input); updates running stats
    in place when training.

    Ghost batch norm: statistics per group of `ghost_batch` images; the running statistics are
    updated with the average over groups of the group means and unbiased group variances, the
    convention of Myrtle.ai's GhostBatchNorm (which averages its per-split running stats)."""
    if not training or ghost_batch <= 0 or ghost_batch >= x.shape[0]:
        # Running statistics in the compute dtype for F.batch_norm (a .half() module's fp16 ones
        # it refuses with an fp32 input), copied back after its in-place update.
        cd = compute_dtype(x)
        rm, rv = (None if t is None else t.to(cd) for t in (running_mean, running_var))
        y = F.batch_norm(x.to(cd), rm, rv,
                         None if weight is None else weight.to(cd), None if bias is None else bias.to(cd),
                         training, momentum, eps)
        if training and rm is not running_mean:
            with torch.no_grad():
                running_mean.copy_(rm), running_var.copy_(rv)
        return activation(y, act, alpha).to(x.dtype)
    mean, var, group, count = ghost_batch_stats(x, ghost_batch)
    if running_mean is not None:
        with torch.no_grad():
            unbiased = var * count / (count - 1).clamp(min=1)
            running_mean.lerp_(mean.mean(0).to(running_mean.dtype), momentum)
            running_var.lerp_(unbiased.mean(0).to(running_var.dtype), momentum)
    rstd = torch.rsqrt(var + eps)
    y = (x.to(mean.dtype) - mean[group][:, :, None, None]) * rstd[group][:, :, None, None]
    if weight is not None:
        y = y * weight.to(mean.dtype)[:, None, None] + bias.to(mean.dtype)[:, None, None]
    return activation(y, act, alpha).to(x.dtype)


_FORCE_REFERENCE = False


def use_reference(flag: bool = True) -> None:
    """Global switch: force the pure-PyTorch path everywhere (for debugging and comparisons)."""
    global _FORCE_REFERENCE
    _FORCE_REFERENCE = flag


class BatchNormAct2d(nn.BatchNorm2d):
    """nn.BatchNorm2d followed by an activation, state_dict-compatible with nn.BatchNorm2d.

    act: one of ACTIVATIONS; alpha: CELU's alpha; ghost_batch: images per statistics group in
    training (0 = whole batch); freeze_scale: keep the scale (weight) at its init value 1 and do
    not train it, as the speed recipes do; fused: use the Triton kernel where it can run (CUDA
    tensors) unless use_reference(True) forces the PyTorch path.

    affine and track_running_stats as in nn.BatchNorm2d (keyword arguments here: the positional
    order differs): without affine parameters the op gets a unit scale and zero shift (buffers
    left out of the state_dict); without running statistics batch statistics are used in eval too.
    nn.SyncBatchNorm.convert_sync_batchnorm would turn this module into a plain SyncBatchNorm and
    drop its activation: fastres's data-parallel training keeps statistics per rank instead.

    `backend` (attribute, not a constructor argument): "auto" = Triton on CUDA, reference on CPU
    (CPU training never pays for Triton's interpreter); "triton" = always the Triton op (tests
    run it on CPU under TRITON_INTERPRET=1); "reference" = always the PyTorch path."""

    def __init__(self, num_features: int, act: str = "relu", alpha: float = 1.0, eps: float = 1e-5,
                 momentum: float | None = 0.1, ghost_batch: int = 0, freeze_scale: bool = False,
                 fused: bool = True, device=None, dtype=None, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")
        self.act, self.alpha, self.ghost_batch, self.fused = act, alpha, ghost_batch, fused
        if affine:
            self.weight.requires_grad_(not freeze_scale)
        else:               # what the op applies in their place; not part of the state_dict
            self.register_buffer("unit_scale", torch.ones(num_features, device=device, dtype=dtype), persistent=False)
            self.register_buffer("zero_shift", torch.zeros(num_features, device=device, dtype=dtype), persistent=False)
        self.backend = "auto"

    def _fused_path(self, x: torch.Tensor) -> bool:
        if not self.fused or _FORCE_REFERENCE or bn_act_op is None or self.backend == "reference":
            return False
        if x.dtype not in bn_act_op.DTYPES:     # float64: the kernels compute in fp32, the reference in fp64
            return False
        return self.backend == "triton" or x.is_cuda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not x.is_floating_point():
            raise TypeError(f"BatchNormAct2d expects a floating-point input, got {x.dtype}")
        factor = 0.0 if self.momentum is None else self.momentum   # eval: unused, but F.batch_norm needs a float
        # Batch statistics in training, and in eval without running statistics (as nn.BatchNorm2d).
        batch_stats = self.training or self.running_mean is None
        if batch_stats:
            if x.numel() == x.shape[1]:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
            g, n = self.ghost_batch, x.shape[0]
            if 0 < g < n and x.shape[2] * x.shape[3] == 1 and (g == 1 or n % g == 1):
                # a ghost group of one image at 1x1: its output would be the bias, its gradient 0
                raise ValueError(f"Expected more than 1 value per channel in each ghost batch group when "
                                 f"training, got input size {tuple(x.shape)} with ghost_batch={g}")
        track = self.training and self.running_mean is not None
        if track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        weight, bias = (self.weight, self.bias) if self.affine else (self.unit_scale, self.zero_shift)
        if not self._fused_path(x) or x.numel() == 0:    # an empty batch: as nn.BatchNorm2d
            return bn_act_reference(x, weight, bias, self.running_mean, self.running_var, batch_stats, factor,
                                    self.eps, self.act, self.alpha, self.ghost_batch)
        if not batch_stats:
            return bn_act_op.fused_eval(x, weight, bias, self.running_mean,
                                        self.running_var, self.eps, self.act, self.alpha)
        y, mean, _, var = bn_act_op.fused_train(x, weight, bias, self.eps, self.act,
                                                self.alpha, self.ghost_batch)
        if not track:
            return y
        # The op is functional; the buffers are updated here with its (non-differentiable)
        # statistics, averaged over ghost groups as the reference does. A plain in-place torch
        # op: compiled, it becomes one small kernel with no custom-op dispatch on the host; eager
        # on a GPU, the foreach form updates both buffers in one launch where two lerp_ take two.
        if mean.shape[0] > 1:
            mean, var = mean.mean(0), var.mean(0)
        running = [self.running_mean, self.running_var]
        torch._foreach_lerp_(running, [t.reshape(-1).to(r.dtype) for t, r in zip((mean, var), running)], factor)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act}, ghost_batch={self.ghost_batch}"
