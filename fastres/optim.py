"""Muon for convolution filters, with one batched Newton-Schulz for all filters of a step.

Muon (anchors.md: the airbench Muon variant and the 2025 record) replaces each filter's update
by the nearest semi-orthogonal matrix of its Nesterov momentum, computed with a few quintic
Newton-Schulz iterations. The speed trick used here: every filter's (out, in*k*k) matrix is
zero-padded into one (L, R, C) tensor so a step costs `steps` batched matmuls, not `steps x L`
small ones. Zero padding is exact: padded rows and columns stay zero through the iteration.
Before the update every filter is rescaled to norm sqrt(out channels) (every `norm_every` steps:
the 2025 record does it every 8th step to save the norms); the BatchNorm after each conv makes
the net invariant to that scale, and fixing it keeps the effective LR constant.
"""
from __future__ import annotations

import math

import torch

# Quintic iteration coefficients (a, b, c): airbench94_muon's (anchors.md) and the retuned set of
# the 2025 CIFAR-10 speedrun record (hiverge/cifar10-speedrun, cifar10_speedrun.py).
NS_COEFFICIENTS = {"airbench": (3.4445, -4.7750, 2.0315), "speedrun": (3.4576, -4.7391, 2.0843)}


def newton_schulz(g: torch.Tensor, steps: int = 3, dtype: torch.dtype = torch.bfloat16, eps: float = 1e-7,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS["airbench"]):
    """Approximately orthogonalise each matrix of g (L, R, C): U V^T of its SVD, with singular
    values pushed towards 1 (the quintic trades exactness for speed: they end up in ~[0.7, 1.2])."""
    a, b, c = coefficients
    transpose = g.shape[-2] > g.shape[-1]
    x = g.transpose(-2, -1) if transpose else g                      # (L, r, c) with r <= c
    x = (x / (x.flatten(1).norm(dim=1).view(-1, 1, 1) + eps)).to(dtype)
    for _ in range(steps):
        gram = x @ x.transpose(-2, -1)                               # (L, r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    x = x.to(g.dtype)
    return x.transpose(-2, -1) if transpose else x


def pad_stack(mats: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Zero-pad 2-D matrices to a common shape and stack them: (L, R, C), in `dtype` (default
    the first matrix's)."""
    rows, cols = max(m.shape[0] for m in mats), max(m.shape[1] for m in mats)
    out = mats[0].new_zeros(len(mats), rows, cols, dtype=dtype)
    for i, m in enumerate(mats):
        out[i, :m.shape[0], :m.shape[1]] = m
    return out


class Muon(torch.optim.Optimizer):
    """Muon with Nesterov momentum for parameters of 2+ dims (conv filters, matrices)."""

    def __init__(self, params, lr: float = 0.24, momentum: float = 0.6, nesterov: bool = True,
                 ns_steps: int = 3, ns_dtype: torch.dtype = torch.bfloat16, norm_every: int = 1,
                 ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS["airbench"]):
        if norm_every < 1:
            raise ValueError(f"norm_every must be >= 1, got {norm_every}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      ns_dtype=ns_dtype, norm_every=norm_every,
                                      ns_coefficients=tuple(ns_coefficients)))
        self.steps = 0

    @torch.no_grad()
    def step(self):
        # One foreach call per operation over all filters (not one call per filter): on a GPU the
        # step is a few dozen launches whatever the number of layers.
        self.steps += 1
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "momentum" not in self.state[p]:
                    self.state[p]["momentum"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum"] for p in params]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            g = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
            mats = [u.reshape(len(u), -1) for u in g]
            ortho = newton_schulz(pad_stack(mats, torch.float32), group["ns_steps"], group["ns_dtype"],
                                  coefficients=group["ns_coefficients"]).to(params[0].dtype)
            updates = []
            for p, m, o in zip(params, mats, ortho):
                rows, cols = m.shape
                u = o[:rows, :cols].reshape(p.shape)
                updates.append(u * math.sqrt(rows / cols) if rows > cols else u)
            if self.steps % group["norm_every"] == 0:        # each filter to norm sqrt(out channels)
                torch._foreach_div_(params, torch._foreach_add(torch._foreach_norm(params), 1e-12))
                torch._foreach_mul_(params, [math.sqrt(len(p)) for p in params])
            torch._foreach_add_(params, updates, alpha=-group["lr"])
