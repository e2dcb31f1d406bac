"""Properties of the batched on-device augmentation (fastres/augment.py), checked against slow
per-image references. Run:  OMP_NUM_THREADS=1 pytest tests/test_augment.py -q   (~ a few s)"""

import pytest
import torch
import torch.nn.functional as F

from fastres import augment
from fastres.augment import (EpochAugmenter, alternating_flip_mask, batch_crop, batch_crop_flip, batch_flip,
                             box_mask, cutout_mask, cutout_pixels, epoch_batches, erase_boxes, from_config, half_flip_mask)
from helpers import HostSyncs

CL = torch.channels_last


def images(n, c=3, h=16, w=16, seed=0):
    """Positive random images (so 0 marks erased pixels), channels-last fp32; asymmetric in W."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, c, h, w), generator=g) + 1).contiguous(memory_format=CL)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_crop(img, oy, ox, pad):
    """Slow, independent reference: F.pad one image, then slice."""
    padded = F.pad(img[None], (pad, pad, pad, pad), mode="reflect")[0]
    return padded[:, oy: oy + img.shape[1], ox: ox + img.shape[2]]


# --- translate / flip -------------------------------------------------------------------------

@pytest.mark.parametrize("pad,h,w,c", [(4, 16, 16, 3), (2, 8, 12, 1), (1, 5, 7, 2)])
def test_batch_crop_matches_reference_every_offset(pad, h, w, c):
    k = 2 * pad + 1
    x = images(k * k, c, h, w)
    offsets = torch.cartesian_prod(torch.arange(k), torch.arange(k))      # every offset once
    out = batch_crop(x, offsets, pad)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous(memory_format=CL)
    for i, (oy, ox) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], reference_crop(x[i], oy, ox, pad))


def test_batch_flip_and_fused_crop_flip():
    x = images(6)
    mask = torch.tensor([True, False, True, True, False, False])
    assert torch.equal(batch_flip(x, mask), torch.where(mask[:, None, None, None], x.flip(3), x))
    offsets = torch.tensor([[0, 4], [1, 2], [8, 8], [3, 0], [4, 4], [7, 1]])
    out = batch_crop_flip(x, offsets, 4, mask)
    for i, (oy, ox) in enumerate(offsets.tolist()):
        ref = reference_crop(x[i], oy, ox, 4)
        assert torch.equal(out[i], ref.flip(2) if mask[i] else ref)


def test_augmenter_translation_uses_drawn_offsets_and_keeps_layout():
    x = images(64)
    aug = EpochAugmenter(64, crop_pad=4, flip="random", generator=gen(3))
    out = aug(x, 0)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.is_contiguous(memory_format=CL)
    offsets, flip = aug.last["offsets"], aug.last["flip"]
    assert offsets.min() >= 0 and offsets.max() <= 8 and len(offsets.unique(dim=0)) > 20
    assert 10 < int(flip.sum()) < 54
    for i in range(0, 64, 7):
        ref = reference_crop(x[i], *offsets[i].tolist(), 4)
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)
    # each output pixel is some input pixel (reflection only moves pixels)
    assert set(out[0].flatten().tolist()) <= set(x[0].flatten().tolist())


def test_nchw_input_keeps_nchw_and_fp16_keeps_dtype():
    x = images(8)
    kw = dict(crop_pad=2, flip="random", cutout=4, erase_p=1.0)
    expect = EpochAugmenter(8, generator=gen(), **kw)(x, 0)
    for kw2 in (kw, dict(cutout=4), dict(erase_p=1.0)):
        xn = x.contiguous()
        before = xn.clone()
        out = EpochAugmenter(8, generator=gen(), **kw2)(xn, 0)
        assert out.is_contiguous() and out.shape == x.shape and torch.equal(xn, before)
        assert (out == 0).any()
    assert torch.equal(EpochAugmenter(8, generator=gen(), **kw)(x.contiguous(), 0), expect)
    xh = images(8).half().contiguous(memory_format=CL)
    out = EpochAugmenter(8, crop_pad=2, flip="random", cutout=4, generator=gen())(xh, 0)
    assert out.dtype == torch.float16 and out.is_contiguous(memory_format=CL)


def test_everything_off_is_free_and_input_never_modified():
    x = images(8)
    aug = EpochAugmenter(8, generator=gen())
    assert aug(x, 0) is x and aug.rng_calls == 0
    before = x.clone()
    EpochAugmenter(8, crop_pad=2, cutout=4, erase_p=1.0, generator=gen())(x, 0)
    EpochAugmenter(8, cutout=4, generator=gen())(x, 0)
    assert torch.equal(x, before)


@pytest.mark.parametrize("kwargs", [dict(crop_pad=2, flip="alternating", cutout=4, erase_p=0.5),
                                    dict(flip="random"), dict(cutout=3), dict()])
def test_fused_order_equals_indexing_afterwards(kwargs):
    x = images(50)
    perm = torch.randperm(50, generator=gen(9))
    for epoch in range(2):
        a = EpochAugmenter(50, generator=gen(1), **kwargs)
        b = EpochAugmenter(50, generator=gen(1), **kwargs)
        fused = [a(x, e, order=perm) for e in range(epoch + 1)][-1]
        plain = [b(x, e) for e in range(epoch + 1)][-1]
        assert fused.is_contiguous(memory_format=CL) and torch.equal(fused, plain[perm])


# --- alternating flip -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 11, 256])
def test_alternating_flip_exact_half_then_complement(n):
    x = images(n)
    aug = EpochAugmenter(n, flip="alternating", generator=gen(5))
    flipped = []
    for epoch in range(4):
        out = aug(x, epoch)
        same = (out == x).flatten(1).all(1)
        mirrored = (out == x.flip(3)).flatten(1).all(1)
        assert torch.all(same ^ mirrored)               # each image exactly one of the two
        flipped.append(mirrored)
    assert int(flipped[0].sum()) == n // 2
    assert torch.equal(flipped[1], ~flipped[0]) and torch.equal(flipped[2], flipped[0])
    assert torch.equal(flipped[3], ~flipped[0])


def test_alternating_mask_function():
    base = half_flip_mask(9, gen())
    assert int(base.sum()) == 4
    assert torch.equal(alternating_flip_mask(base, 0), base)
    assert torch.equal(alternating_flip_mask(base, 5), ~base)


# --- cutout -----------------------------------------------------------------------------------

def test_cutout_pixels_same_squares_as_mask():
    g = gen(4)
    centres = torch.randint(0, 11, (300, 2), generator=g)
    for size in (1, 4, 5, 11):
        flat = torch.zeros(300 * 11 * 11, dtype=torch.bool)
        flat[cutout_pixels(centres, size, 11, 11)] = True
        assert torch.equal(flat.view(300, 11, 11), cutout_mask(centres, size, 11, 11))


def test_cutout_area_inside_and_clipped():
    centres = torch.tensor([[8, 8], [0, 0], [15, 8], [3, 14], [5, 4]])
    m = cutout_mask(centres, 6, 16, 16)
    # box rows [c - 3, c + 3) clipped to [0, 16)
    expect = [36, 3 * 3, 4 * 6, 6 * 5, 6 * 6]
    assert m.flatten(1).sum(1).tolist() == expect
    assert m[0, 5:11, 5:11].all()
    odd = cutout_mask(torch.tensor([[8, 8]]), 5, 16, 16)
    assert odd.sum() == 25 and odd[0, 6:11, 6:11].all()


def test_augmenter_cutout_inside_by_default():
    # Myrtle.ai / airbench96: the whole square inside the image, every fitting position drawn.
    x = images(400)
    aug = EpochAugmenter(400, cutout=6, generator=gen(2))
    zeros = (aug(x, 0) == 0).all(1)
    centres = aug.last["cutout_centres"]
    assert torch.equal(zeros, cutout_mask(centres, 6, 16, 16))
    assert (zeros.flatten(1).sum(1) == 36).all()                          # never clipped
    assert centres.min() == 3 and centres.max() == 13                     # tops 0 .. 16 - 6
    assert len(centres[:, 0].unique()) == 11 and len(centres[:, 1].unique()) == 11
    with pytest.raises(ValueError, match="does not fit"):
        EpochAugmenter(4, cutout=17)(images(4), 0)


def test_augmenter_cutout_clipped_zeroes_the_drawn_square():
    x = images(200)
    aug = EpochAugmenter(200, cutout=8, generator=gen(1), cutout_inside=False)
    out = aug(x, 0)
    zeros = (out == 0).all(1)                                    # (N, H, W) pixels cut out
    centres = aug.last["cutout_centres"]
    assert centres.min() >= 0 and centres.max() <= 15 and len(centres.unique(dim=0)) > 100
    assert torch.equal(zeros, cutout_mask(centres, 8, 16, 16))
    areas = zeros.flatten(1).sum(1)
    assert areas.max() == 64 and areas.min() >= 16 and (areas < 64).any()
    assert torch.equal(out[~zeros[:, None].expand_as(out)], x[~zeros[:, None].expand_as(x)])


# --- random erasing ---------------------------------------------------------------------------

def test_random_erasing_boxes_in_range_and_rate():
    n, h, w, p, area, ratio = 4000, 32, 32, 0.5, (0.02, 0.33), (0.3, 3.3)
    x = images(n, 1, h, w)
    aug = EpochAugmenter(n, erase_p=p, erase_area=area, erase_ratio=ratio, generator=gen(7))
    out = aug(x, 0)
    top, left, bh, bw = aug.last["erase_boxes"]
    erased = bh > 0
    assert abs(erased.float().mean().item() - p) < 0.05          # ~9 sd at n=4000
    zeros = (out == 0).all(1)
    assert torch.equal(zeros, box_mask(top, left, bh, bw, h, w))
    assert torch.equal(zeros.flatten(1).sum(1), bh * bw)         # the box is never clipped
    e = erased
    assert (top[e] >= 0).all() and (top[e] + bh[e] <= h).all() and (left[e] + bw[e] <= w).all()
    # (bh, bw) = round(sqrt(A r HW)), round(sqrt(A HW / r)): some A, r in range must round to them
    hb, wb = bh[e].double(), bw[e].double()
    a_lo, a_hi = (hb - .5) * (wb - .5) / (h * w), (hb + .5) * (wb + .5) / (h * w)
    r_lo, r_hi = (hb - .5) / (wb + .5), (hb + .5) / (wb - .5)
    assert (a_hi >= area[0]).all() and (a_lo <= area[1]).all()
    assert (r_hi >= ratio[0]).all() and (r_lo <= ratio[1]).all()
    frac = (hb * wb / (h * w))
    assert frac.min() < 0.05 and frac.max() > 0.25                # spread over the range
    assert (hb > wb).float().mean() > 0.3 and (hb < wb).float().mean() > 0.3


def test_erase_rejects_boxes_that_do_not_fit():
    # every candidate has area 0.9 with ratio 3: h = 1.64 H > H, so none fits -> not erased
    u = torch.zeros(2 * augment.ERASE_TRIES + 3, 5)
    u[augment.ERASE_TRIES: 2 * augment.ERASE_TRIES] = 1.0
    top, left, bh, bw = erase_boxes(u, 8, 8, p=1.0, area=(0.9, 0.9), ratio=(3.0, 3.0))
    assert (bh == 0).all() and (bw == 0).all()


def test_normal_fill_erasing():
    x = images(64, 3, 16, 16)
    aug = EpochAugmenter(64, erase_p=1.0, erase_fill="normal", generator=gen(2))
    out = aug(x, 0)
    top, left, bh, bw = aug.last["erase_boxes"]
    changed = (out != x).any(1)
    assert torch.equal(changed, box_mask(top, left, bh, bw, 16, 16))
    assert out[out != x].min() < 0                               # noise, not a constant


# --- RNG: bulk draws, explicit generator, determinism -----------------------------------------

RNG_FUNCS = ["rand", "randn", "randint", "randperm", "bernoulli", "multinomial", "normal", "poisson",
             "rand_like", "randn_like", "randint_like"]
RNG_METHODS = ["uniform_", "normal_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_",
               "log_normal_", "bernoulli", "multinomial"]


@pytest.fixture
def rng_counter(monkeypatch):
    """Counts every call to a torch random function or in-place random Tensor method."""
    count = [0]

    def wrap(fn):
        def counted(*args, **kwargs):
            count[0] += 1
            return fn(*args, **kwargs)
        return counted
    for name in RNG_FUNCS:
        monkeypatch.setattr(torch, name, wrap(getattr(torch, name)))
    for name in RNG_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(getattr(torch.Tensor, name)))
    return count


FULL = dict(crop_pad=2, flip="random", cutout=4, erase_p=0.5, brightness=0.1, contrast=0.1)


@pytest.mark.parametrize("kwargs", [FULL, dict(FULL, flip="alternating", erase_fill="normal"), dict(flip="alternating")])
def test_rng_calls_per_epoch_independent_of_n_and_batch_size(rng_counter, kwargs):
    per_epoch = {}
    for n, bs in [(256, 32), (4096, 512), (4096, 32), (256, 512 // 4)]:
        x = images(n, 3, 8, 8)
        g = gen(0)
        aug = EpochAugmenter(n, generator=g, **kwargs)
        counts = []
        for epoch in range(3):
            before_wrapped, before_own = rng_counter[0], aug.rng_calls
            aug(x, epoch)
            calls_aug = rng_counter[0] - before_wrapped
            assert calls_aug == aug.rng_calls - before_own       # the attribute tells the truth
            batches = list(epoch_batches(n, bs, g))
            counts.append((calls_aug, rng_counter[0] - before_wrapped - calls_aug, len(batches) > 0))
        per_epoch[(n, bs)] = counts
    first = next(iter(per_epoch.values()))
    assert all(v == first for v in per_epoch.values()), per_epoch
    assert all(c[1] == 1 for c in first)                         # one randperm per epoch of batches
    assert all(c[0] <= 2 for c in first)


def test_counter_would_catch_per_image_draws(rng_counter):
    """Guard against a vacuous counter: a per-image loop is visible to it."""
    g = gen()
    for _ in range(5):
        torch.randint(0, 3, (1,), generator=g)
    assert rng_counter[0] == 5


def test_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    aug = EpochAugmenter(128, generator=gen(), **dict(FULL, flip="alternating"))
    aug(images(128), 0)
    list(epoch_batches(128, 32, gen()))
    assert torch.equal(torch.get_rng_state(), state)


def test_deterministic_from_seed():
    x = images(128)

    def run(seed):
        aug = EpochAugmenter(128, generator=gen(seed), **dict(FULL, flip="alternating"))
        return [aug(x, e) for e in range(2)]
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert not torch.equal(a[0], a[1])                           # epochs differ


def test_from_config_reads_fields():
    from fastres.config import Config
    cfg = Config(crop_pad=3, flip="alternating", cutout=5, erase_p=0.25, erase_area=(0.1, 0.2), erase_ratio=(0.5, 2.0),
                 brightness=0.1, contrast=0.2)
    aug = from_config(cfg, 10, gen())
    assert (aug.crop_pad, aug.flip, aug.cutout, aug.erase_p) == (3, "alternating", 5, 0.25)
    assert (aug.brightness, aug.contrast, aug.cutout_inside) == (0.1, 0.2, True)
    assert not from_config(cfg.replace(cutout_inside=False), 10, gen()).cutout_inside
    assert aug.erase_area == (0.1, 0.2) and aug.erase_ratio == (0.5, 2.0)


def test_jitter_is_per_image_shift_then_scale_after_crop_and_flip():
    x = images(64)
    jitter = EpochAugmenter(64, generator=gen(3), crop_pad=2, flip="random", brightness=0.2, contrast=0.1)
    perm = torch.randperm(64, generator=gen(4))
    for epoch in range(2):
        out = jitter(x, epoch, order=perm)
        offsets, flip = jitter.last["offsets"], jitter.last["flip"]
        ref = torch.stack([reference_crop(x[j], int(oy), int(ox), 2) for j, (oy, ox) in zip(perm, offsets)])
        ref = torch.where(flip.view(-1, 1, 1, 1), ref.flip(-1), ref)
        shift, scale = jitter.last["jitter"]
        assert shift.abs().max() <= 0.2 and (scale - 1).abs().max() <= 0.1
        assert shift.std() > 0.05 and (scale - 1).std() > 0.02                 # one draw per image
        expected = (ref + shift.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1)
        assert torch.allclose(out, expected, atol=1e-6) and out.is_contiguous(memory_format=CL)
    assert torch.equal(x, images(64))                                             # input untouched


def test_jitter_alone_copies_and_cutout_stays_zero():
    x = images(32)
    out = EpochAugmenter(32, generator=gen(), brightness=0.5)(x, 0)
    assert out.data_ptr() != x.data_ptr() and torch.equal(x, images(32))
    assert not torch.equal(out, x) and torch.allclose(out - x, (out - x)[:, :1, :1, :1].expand_as(x), atol=1e-6)
    aug = EpochAugmenter(32, generator=gen(), cutout=4, brightness=0.5, contrast=0.5)
    out = aug(x, 0)                                  # jittered pixels stay >= (1 - 0.5) * 0.5 > 0
    assert ((out == 0).all(1).flatten(1).sum(1) == 16).all()   # exactly the 4x4 square is 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        EpochAugmenter(4, contrast=1.0)
    with pytest.raises(ValueError):
        EpochAugmenter(4, brightness=-0.1)
    with pytest.raises(ValueError):
        EpochAugmenter(4, flip="sometimes")
    with pytest.raises(ValueError):
        EpochAugmenter(4, crop_pad=1)(images(5), 0)
    with pytest.raises(ValueError):
        batch_crop(images(2, h=4, w=4), torch.zeros(2, 2, dtype=torch.long), 4)


# --- epoch_batches ----------------------------------------------------------------------------

@pytest.mark.parametrize("n,bs", [(100, 32), (96, 32), (10, 64)])
def test_epoch_batches_cover_each_index_once(n, bs):
    g = gen()
    batches = list(epoch_batches(n, bs, g, drop_last=False))
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(n))
    assert all(len(b) == bs for b in batches[:-1])
    full = list(epoch_batches(n, bs, g, drop_last=True))
    assert len(full) == n // bs and all(len(b) == bs for b in full)
    kept = torch.cat(full) if full else torch.empty(0, dtype=torch.long)
    assert len(kept.unique()) == len(kept) == len(full) * bs            # no index twice
    second = torch.cat(list(epoch_batches(n, bs, g, drop_last=False)))
    assert not torch.equal(second, torch.cat(batches)) or n < 3   # reshuffled each epoch


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA")])])
def test_fp16_full_augmentation_matches_the_reference(device):
    # Every part at once, in fp16 on the training device: the crop/flip gather, then the
    # brightness/contrast jitter (an fp16 add then multiply, rounded per op on CPU and GPU
    # alike), then cutout and erasing (zeros; the images are positive, so 0 marks them).
    x = images(64).half().to(device).contiguous(memory_format=CL)
    g = torch.Generator(device=device).manual_seed(0)
    aug = EpochAugmenter(64, generator=g, **dict(FULL, flip="alternating"))
    out = aug(x, 1)
    assert out.device.type == device and out.dtype == torch.float16
    assert out.is_contiguous(memory_format=CL)
    ref = batch_crop_flip(x.cpu(), aug.last["offsets"].cpu(), 2, aug.last["flip"].cpu())
    shift, scale = (t.cpu().view(-1, 1, 1, 1) for t in aug.last["jitter"])
    ref = ref.add_(shift).mul_(scale)
    keep = out.cpu() != 0
    assert (~keep).any() and keep.float().mean() > 0.5       # cutout/erasing ran, most survive
    assert torch.equal(out.cpu()[keep], ref[keep])


@pytest.mark.parametrize("flip", ["random", "alternating"])
def test_an_epoch_never_waits_for_the_device(flip):
    # The CPU stand-in for the GPU test test_no_host_sync_from_the_first_step_to_the_end_of_the_timer,
    # which found the crop's and cutout's host-made tensors on an H200 (2026-12-04). On the meta
    # device every data-dependent op (.item(), a boolean mask, nonzero) raises, and the mode
    # records each call that would wait for a GPU (helpers.HostSyncs).
    x = torch.empty(64, 3, 16, 16, dtype=torch.float16, device="meta")
    aug = EpochAugmenter(64, **dict(FULL, flip=flip))
    with HostSyncs() as mode:
        out = aug(x, 1, order=torch.randperm(64))
    assert out.shape == x.shape and out.device.type == "meta"
    assert mode.calls == []
