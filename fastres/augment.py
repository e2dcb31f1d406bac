"""Batched, on-device augmentation of the whole training set, once per epoch.

The Myrtle.ai trick (24 epochs of augmentation in 0.36 s on a V100): instead of a DataLoader
augmenting one image at a time in worker processes, augment the whole (N, C, H, W) training
tensor at once where it already lives (GPU or CPU), in the main thread, with the random numbers
of an epoch drawn in bulk: a constant number of RNG calls per epoch, whatever N or the batch size.

    aug = EpochAugmenter(len(x), crop_pad=4, flip="alternating", cutout=8, generator=g)
    for epoch in range(epochs):
        xa = aug(x, epoch)                                  # (N, C, H, W), channels-last
        for idx in epoch_batches(len(x), 512, g):           # one randperm per epoch
            train_step(xa[idx], y[idx])

Faster still: pass the epoch's permutation, `xa = aug(x, epoch, order=perm)`, and take batches
as slices xa[i:i+b], y[perm[i:i+b]]: the shuffle rides on the augmentation gather (one pass
over the data fewer per epoch; 1.4-1.6x on CPU, bench/loader.py).

Choices (documented because they differ between papers):
- Translate = reflect-pad by `pad` px then crop H x W at offset (oy, ox) in [0, 2 pad]^2
  (PyTorch 'reflect': the edge pixel is not repeated). Crop and flip are fused into one gather:
  the set is reflect-padded along W (and mirrored, when flipping) once and cached; each output
  row is then one contiguous (W*C)-element window of a cached row, chosen by index arithmetic.
- Cutout: an s x s square filled with 0 (the per-channel mean of normalised data). By default
  the square lies fully inside the image, its corner uniform over the positions where it fits,
  as in Myrtle.ai's and airbench96's code; cutout_inside=False draws the centre uniformly over
  all pixels and clips the square at the border, as DeVries & Taylor describe.
- Random erasing (Zhong et al.): with probability p, a box of area fraction ~ U(erase_area) and
  aspect h/w log-uniform in erase_ratio (as torchvision's RandomErasing), fully inside the image
  and allowed to span a whole side, up to ERASE_TRIES candidates, all drawn in bulk; an image
  whose candidates all fail is not erased. Zhong et al.'s own code draws the aspect uniformly in
  [r1, 1/r1] and tries up to 100 times; both it and torchvision require the box to be strictly
  smaller than the image. Fill 0 (the normalised mean) or N(0, 1) ('normal').
- Brightness/contrast jitter (the 2025 record): each normalised image becomes (x + b) * c with
  b ~ U(-brightness, brightness) and c ~ U(1 - contrast, 1 + contrast), after crop and flip and
  before cutout/erasing (so erased pixels stay exactly 0).
- Randomness comes only from the explicit generator; draws happen on its device, so pass one on
  the data's device (torch.Generator(device="cuda")) to avoid host-device copies.
"""
from __future__ import annotations

import math

import torch

ERASE_TRIES = 10        # torchvision's RandomErasing tries 10 times; here all 10 are drawn at once
FLIPS = ("none", "random", "alternating")


def reflect_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Map positions in [-(size-1), 2 size - 2] into [0, size) by reflection (edge not repeated)."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def padded_rows(x: torch.Tensor, pad: int, mirror: bool) -> torch.Tensor:
    """(S, N, H, W + 2 pad, C) contiguous: x reflect-padded along W; S=2 adds its mirror image.

    Built once per training set (EpochAugmenter caches it) so each epoch is a single gather."""
    n, c, h, w = x.shape
    if pad > w - 1:
        raise ValueError(f"reflect padding {pad} needs images wider than {pad} px (got W={w})")
    xh = x.permute(0, 2, 3, 1)                                   # (N, H, W, C), a view
    cols = reflect_index(torch.arange(-pad, w + pad, device=x.device), w)
    out = torch.empty((2 if mirror else 1, n, h, w + 2 * pad, c), dtype=x.dtype, device=x.device)
    torch.index_select(xh, 2, cols, out=out[0])
    if mirror:
        torch.index_select(xh, 2, cols.flip(0), out=out[1])
    return out


def batch_crop_flip(x: torch.Tensor, offsets: torch.Tensor | None, pad: int,
                    flip_mask: torch.Tensor | None = None, source: torch.Tensor | None = None,
                    order: torch.Tensor | None = None) -> torch.Tensor:
    """Translate (reflect pad, crop at offsets (N, 2) = (oy, ox) in [0, 2 pad]) then flip masked images.

    One gather: output row i of image k is the window starting at ox of padded row
    reflect(i + oy - pad). A flipped image reads the mirrored copy at start 2 pad - ox, since
    mirrored column j + 2 pad - ox is padded column W - 1 - j + ox. `source` = padded_rows(...).
    With `order` (M,) the output is (M, ...) and image k is x[order[k]] (offsets, mask per output)."""
    n, c, h, w = x.shape
    dev = x.device
    if source is None:
        source = padded_rows(x, pad, flip_mask is not None)
    image = torch.arange(n, device=dev) if order is None else order.to(dev)
    m = len(image)
    if offsets is None:
        offsets = torch.full((m, 2), pad, dtype=torch.long, device=dev)
    oy, ox = offsets[:, 0].to(dev, torch.long), offsets[:, 1].to(dev, torch.long)
    if flip_mask is not None:
        flip = flip_mask.to(dev)
        image = image + n * flip                                   # pick the mirrored copy
        ox = torch.where(flip, 2 * pad - ox, ox)
    rows = reflect_index(torch.arange(h, device=dev) + (oy - pad)[:, None], h)     # (N, H)
    row_id = (image[:, None] * h + rows).reshape(-1)                                # (N*H,)
    wp = w + 2 * pad
    # every window of W pixels in every padded row, as a view: (S*N*H, 2 pad + 1, W*C)
    windows = source.as_strided((source.numel() // (wp * c), 2 * pad + 1, w * c), (wp * c, c, 1))
    out = windows[row_id, ox[:, None].expand(m, h).reshape(-1)]                     # (M*H, W*C)
    return _like(out.view(m, h, w, c).permute(0, 3, 1, 2), x)


def batch_crop(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad by `pad` and crop each image at its (oy, ox) offset in [0, 2 pad]."""
    return batch_crop_flip(x, offsets, pad)


def batch_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (along W) the images where the (N,) bool mask is True."""
    return batch_crop_flip(x, None, 0, mask)


def half_flip_mask(n: int, generator: torch.Generator) -> torch.Tensor:
    """Exactly n // 2 images chosen by one random permutation (airbench's alternating flip base)."""
    chosen = torch.randperm(n, generator=generator, device=generator.device)[: n // 2]
    mask = torch.zeros(n, dtype=torch.bool, device=generator.device)
    mask[chosen] = True
    return mask


def alternating_flip_mask(base_mask: torch.Tensor, epoch: int) -> torch.Tensor:
    """Epoch 0 flips base_mask, each later epoch exactly the complement of the one before:
    every image is seen both ways in any two consecutive epochs (airbench: ~10% fewer steps)."""
    return base_mask ^ bool(epoch % 2)


def box_mask(top: torch.Tensor, left: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor,
             h: int, w: int) -> torch.Tensor:
    """(N, H, W) bool, True inside rows [top, top+bh) x cols [left, left+bw), clipped to the image."""
    r = torch.arange(h, device=top.device)
    c = torch.arange(w, device=top.device)
    in_r = (r >= top[:, None]) & (r < (top + bh)[:, None])                  # (N, H)
    in_c = (c >= left[:, None]) & (c < (left + bw)[:, None])                # (N, W)
    return in_r[:, :, None] & in_c[:, None, :]


def cutout_mask(centres: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """(N, H, W) mask of size x size squares at integer centres (N, 2) = (cy, cx), clipped at
    borders. For even sizes the centre is the pixel just below/right of the middle."""
    top, left = centres[:, 0] - size // 2, centres[:, 1] - size // 2
    side = torch.full_like(top, size)
    return box_mask(top, left, side, side, h, w)


def cutout_pixels(centres: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Flat indices into the (N*H*W) pixels of the same squares as cutout_mask, N*size^2 of them.

    Zeroing ~6% of the pixels by index is ~5x faster than a full-size masked fill. Clipped
    squares repeat their edge row/column instead (duplicates are harmless when writing zeros)."""
    n = len(centres)
    k = torch.arange(size, device=centres.device)
    lo = centres - size // 2                                                        # (N, 2)
    # first/last in-image coordinate of each square, then every position clamped into it
    inside = torch.maximum(lo[:, :, None] + k, lo.clamp(min=0)[:, :, None])        # (N, 2, size)
    rows, cols = inside[:, 0].clamp(max=h - 1), inside[:, 1].clamp(max=w - 1)       # (N, size) each
    image = torch.arange(n, device=centres.device)[:, None, None]
    return ((image * h + rows[:, :, None]) * w + cols[:, None, :]).reshape(-1)


def _uniform_int(u: torch.Tensor, k) -> torch.Tensor:
    """floor(u * k) for u ~ U[0, 1): an integer uniform in [0, k); clamped as fp32 u*k may round to
    k. k is an int or a tensor on u's device (an int is never made a tensor: on a GPU that would
    be a copy from the host, which waits for the GPU)."""
    return (u * k).long().clamp(max=k - 1)


def erase_boxes(u: torch.Tensor, h: int, w: int, p: float, area=(0.02, 0.33), ratio=(0.3, 3.3)):
    """Random-erasing boxes from uniforms u (2 ERASE_TRIES + 3, N). Returns (top, left, bh, bw),
    with bh = bw = 0 for images not erased (probability 1 - p, or no candidate fitted)."""
    k = ERASE_TRIES
    frac = area[0] + (area[1] - area[0]) * u[:k]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[k: 2 * k]
    bh = torch.sqrt(frac * h * w * torch.exp(log_r)).round().long()          # (K, N)
    bw = torch.sqrt(frac * h * w * torch.exp(-log_r)).round().long()
    fits = (bh >= 1) & (bh <= h) & (bw >= 1) & (bw <= w)
    first = fits.int().argmax(0, keepdim=True)        # first fitting candidate (ties -> first)
    erase = (u[2 * k] < p) & fits.any(0)
    bh = torch.where(erase, bh.gather(0, first)[0], 0)
    bw = torch.where(erase, bw.gather(0, first)[0], 0)
    top = _uniform_int(u[2 * k + 1], h - bh + 1)
    left = _uniform_int(u[2 * k + 2], w - bw + 1)
    return top, left, bh, bw


def fill_masked(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | None = None,
                inplace: bool = False) -> torch.Tensor:
    """x with pixels where the (N, H, W) mask is True set to 0 (or to `fill`, NHWC-shaped).

    inplace=True writes into x: ~2.5x faster than a copy on CPU."""
    xh = x.permute(0, 2, 3, 1)
    m = mask[..., None]
    if inplace:
        xh.masked_fill_(m, 0) if fill is None else torch.where(m, fill.to(x.dtype), xh, out=xh)
        return x
    out = xh.masked_fill(m, 0) if fill is None else torch.where(m, fill.to(x.dtype), xh)
    return _like(out.permute(0, 3, 1, 2), x)


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Give out the memory format of x (channels-last in, channels-last out)."""
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return out.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)


class EpochAugmenter:
    """Augments the whole training set once per epoch with bulk random draws.

    RNG calls: one randperm at construction (flip="alternating"), then per epoch one torch.rand
    of shape (rows, N) holding every uniform the epoch needs, plus one torch.randn when erasing
    fills with noise. Disabled parts draw and compute nothing; with everything disabled x itself
    is returned (do not modify it in place). The draws of the latest epoch are kept in `last`.
    Memory: crop/flip cache x padded along W (x (W + 2 pad) / W), twice when flipping."""

    def __init__(self, n: int, crop_pad: int = 0, flip: str = "none", cutout: int = 0, erase_p: float = 0.0,
                 erase_area=(0.02, 0.33), erase_ratio=(0.3, 3.3), generator: torch.Generator | None = None,
                 erase_fill: str = "zero", brightness: float = 0.0, contrast: float = 0.0,
                 cutout_inside: bool = True):
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
        if erase_fill not in ("zero", "normal"):
            raise ValueError(f"erase_fill must be 'zero' or 'normal', got {erase_fill!r}")
        if crop_pad < 0 or cutout < 0 or not 0 <= erase_p <= 1:
            raise ValueError("crop_pad and cutout must be >= 0 and erase_p in [0, 1]")
        if brightness < 0 or not 0 <= contrast < 1:
            raise ValueError("brightness must be >= 0 and contrast in [0, 1)")
        self.brightness, self.contrast, self.cutout_inside = brightness, contrast, cutout_inside
        self.n, self.crop_pad, self.flip, self.cutout = n, crop_pad, flip, cutout
        self.erase_p, self.erase_area, self.erase_ratio = erase_p, tuple(erase_area), tuple(erase_ratio)
        self.erase_fill = erase_fill
        # a fixed default seed keeps generator=None reproducible; it lives on the CPU
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.rng_calls = 0
        self.last: dict = {}
        self._cache_key, self._source = None, None
        self._base_flip = None
        if flip == "alternating":
            self._base_flip = half_flip_mask(n, self.generator)
            self.rng_calls += 1
        # rows of the per-epoch uniform draw, in this order
        self._rows = {"crop": 2 * (crop_pad > 0), "flip": int(flip == "random"), "cutout": 2 * (cutout > 0),
                      "erase": (2 * ERASE_TRIES + 3) * (erase_p > 0), "jitter": 2 * (brightness > 0 or contrast > 0)}

    def _draw_uniforms(self) -> dict:
        total = sum(self._rows.values())
        if total == 0:
            return {}
        g = self.generator
        u = torch.rand((total, self.n), generator=g, device=g.device, dtype=torch.float32)
        self.rng_calls += 1
        parts, start = {}, 0
        for name, k in self._rows.items():
            parts[name], start = u[start: start + k], start + k
        return parts

    def _padded(self, x: torch.Tensor, mirror: bool) -> torch.Tensor:
        # The training set is the same tensor every epoch: pad (and mirror) it only once.
        key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, x._version, mirror)
        if key != self._cache_key:
            self._source, self._cache_key = padded_rows(x, self.crop_pad, mirror), key
        return self._source

    def __call__(self, x: torch.Tensor, epoch: int, order: torch.Tensor | None = None) -> torch.Tensor:
        """Augmented copy of x; with `order` (a permutation), exactly that copy indexed by order.

        order=perm fuses the epoch's shuffle into the augmentation gather, so batches become
        slices (out[i:i+b] with labels y[perm[i:i+b]]) and the per-batch index copy disappears."""
        n, c, h, w = x.shape
        if n != self.n:
            raise ValueError(f"EpochAugmenter was built for {self.n} images, got {n}")
        dev = x.device
        u = {k: v.to(dev) for k, v in self._draw_uniforms().items()}
        if order is not None:
            order = order.to(dev)
            u = {k: v[:, order] for k, v in u.items()}      # each image keeps its own draws
        offsets = flip = None
        if self.crop_pad:
            offsets = _uniform_int(u["crop"], 2 * self.crop_pad + 1).T              # (N, 2)
        if self.flip == "random":
            flip = u["flip"][0] < 0.5
        elif self.flip == "alternating":
            flip = alternating_flip_mask(self._base_flip, epoch).to(dev)
            flip = flip if order is None else flip[order]
        self.last = {"epoch": epoch, "offsets": offsets, "flip": flip}
        # work channels-last (NHWC pixels are what the fills index); no copy for the expected layout
        out = src = x.contiguous(memory_format=torch.channels_last)
        if offsets is not None or flip is not None:
            out = batch_crop_flip(src, offsets, self.crop_pad, flip, self._padded(x, flip is not None), order)
        elif order is not None:
            out = src[order]
        jitter = self._rows["jitter"] > 0
        if (self.cutout or self.erase_p or jitter) and out is x:
            out = x.clone()                                  # never write into the caller's x
        if jitter:
            shift = ((2 * u["jitter"][0] - 1) * self.brightness).to(out.dtype).view(-1, 1, 1, 1)
            scale = (1 + (2 * u["jitter"][1] - 1) * self.contrast).to(out.dtype).view(-1, 1, 1, 1)
            self.last["jitter"] = (shift.flatten(), scale.flatten())
            out.add_(shift).mul_(scale)
        if self.cutout:
            if self.cutout_inside and self.cutout > min(h, w):
                raise ValueError(f"cutout {self.cutout} does not fit inside {h}x{w} images")
            # inside: top-left uniform in [0, H - s], i.e. centre = top + s // 2; else any pixel
            span = (h - self.cutout + 1, w - self.cutout + 1) if self.cutout_inside else (h, w)
            lo = self.cutout // 2 if self.cutout_inside else 0
            centres = torch.stack([_uniform_int(u["cutout"][0], span[0]), _uniform_int(u["cutout"][1], span[1])], 1) + lo
            self.last["cutout_centres"] = centres
            out.permute(0, 2, 3, 1).view(-1, c).index_fill_(0, cutout_pixels(centres, self.cutout, h, w), 0)
        if self.erase_p:
            boxes = self.last["erase_boxes"] = erase_boxes(u["erase"], h, w, self.erase_p,
                                                           self.erase_area, self.erase_ratio)
            fill = None
            if self.erase_fill == "normal":
                g = self.generator
                fill = torch.randn((len(out), h, w, c), generator=g, device=g.device, dtype=x.dtype).to(dev)
                self.rng_calls += 1
            out = fill_masked(out, box_mask(*boxes, h, w), fill, inplace=True)
        return _like(out, x)


def from_config(cfg, n: int, generator: torch.Generator | None = None) -> EpochAugmenter:
    """EpochAugmenter from a fastres Config (crop_pad, flip, cutout*, erase_*, brightness, contrast)."""
    return EpochAugmenter(n, crop_pad=cfg.crop_pad, flip=cfg.flip, cutout=cfg.cutout, erase_p=cfg.erase_p,
                          erase_area=cfg.erase_area, erase_ratio=cfg.erase_ratio, generator=generator,
                          brightness=cfg.brightness, contrast=cfg.contrast, cutout_inside=cfg.cutout_inside)


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True):
    """Yields index tensors of one shuffled epoch: one randperm per epoch."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield perm[start: start + batch_size]
