"""Evaluation with test-time augmentation (TTA).

Levels (anchors.md, airbench): 0 = the image alone; 1 = the image and its mirror, averaged;
2 = mirror x {no shift, 1 px up-left, 1 px down-right}, the unshifted pair weighted 1/2 and
each shifted pair 1/4. Logits are averaged, then the argmax is the prediction.
"""
from __future__ import annotations

import functools

import torch

from .augment import reflect_index


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate images (N, C, H, W) so content moves by (dy, dx) pixels, reflect-filling (as
    padding mode "reflect": the edge is not repeated). A gather, so it works for every dtype
    and device (torch 2.4 has no fp16 channels-last reflection padding on the CPU)."""
    if dy == 0 and dx == 0:
        return x
    rows, cols = _shift_index(*x.shape[-2:], dy, dx, x.device)
    return x[..., rows, cols]


@functools.lru_cache(maxsize=16)
def _shift_index(h: int, w: int, dy: int, dx: int, device: torch.device):
    """Source rows (H, 1) and columns (W,) of a shifted view; built once, not per batch."""
    rows = reflect_index(torch.arange(h, device=device) - dy, h)
    cols = reflect_index(torch.arange(w, device=device) - dx, w)
    return rows[:, None], cols


def model_input(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) in the one channels-last layout every model call uses. With C == 1 the
    channel stride is meaningless and different views leave it at 0, 1 or H*W; pinning it keeps
    torch.compile from compiling a new graph for each (its guards check strides)."""
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1 and x.stride(1) != 1:
        x = x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
    return x


def tta_views(level: int):
    """(weight, dy, dx, mirror) for each view of a TTA level; weights sum to 1."""
    if level == 0:
        return [(1.0, 0, 0, False)]
    if level == 1:
        return [(0.5, 0, 0, False), (0.5, 0, 0, True)]
    if level == 2:
        return ([(0.25, 0, 0, m) for m in (False, True)]
                + [(0.125, d, d, m) for d in (-1, 1) for m in (False, True)])
    raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, tta: int = 0, batch_size: int = 1000,
                   fraction: float = 1.0) -> torch.Tensor:
    """TTA-averaged logits (N, K) in fp32. The model is put in eval mode and restored after.

    Selective TTA (the 2025 record's trick): with fraction < 1, every image is first predicted
    without TTA, and only the `fraction` least confident (lowest top softmax probability) get
    the full TTA average; confident predictions rarely change under TTA."""
    if tta == 0 or fraction >= 1:
        return _predict(model, x, tta, batch_size)
    logits = _predict(model, x, 0, batch_size)
    confidence = logits.softmax(1).amax(1)
    unsure = confidence.topk(max(1, round(fraction * len(x))), largest=False).indices
    logits[unsure] = _predict(model, x[unsure], tta, batch_size)
    return logits


def _predict(model: torch.nn.Module, x: torch.Tensor, tta: int, batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    outputs = []
    for chunk in x.split(batch_size):                     # (B, C, H, W)
        logits = 0.0
        for weight, dy, dx, mirror in tta_views(tta):
            view = shift(chunk, dy, dx)
            if mirror:
                view = view.flip(-1)
            logits = logits + weight * model(model_input(view)).float()
        outputs.append(logits)
    model.train(was_training)
    return torch.cat(outputs)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction correct as a 0-dim device tensor (no host sync until the caller reads it)."""
    return (logits.argmax(1) == y).float().mean()
