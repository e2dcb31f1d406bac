"""Muon's batched Newton-Schulz against an SVD reference, and the optimiser's update rule."""
import math

import pytest
import torch

from fastres.optim import NS_COEFFICIENTS, Muon, newton_schulz, pad_stack


def test_newton_schulz_approximates_orthogonal_factor():
    torch.manual_seed(0)
    g = torch.randn(3, 16, 40, dtype=torch.float64)
    x = newton_schulz(g, steps=10, dtype=torch.float64)
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.6 and s.max() < 1.25                 # the quintic's target band
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cosine = (x * (u @ vh)).sum((1, 2)) / (x.norm(dim=(1, 2)) * (u @ vh).norm(dim=(1, 2)))
    assert (cosine > 0.97).all()                              # same direction as U V^T


def test_batched_padding_equals_one_by_one():
    torch.manual_seed(1)
    mats = [torch.randn(8, 27, dtype=torch.float64), torch.randn(16, 72, dtype=torch.float64),
            torch.randn(12, 5, dtype=torch.float64)]
    together = newton_schulz(pad_stack(mats), steps=3, dtype=torch.float64)
    for i, m in enumerate(mats):
        alone = newton_schulz(m[None], steps=3, dtype=torch.float64)[0]
        assert torch.allclose(together[i, :m.shape[0], :m.shape[1]], alone, atol=1e-10)
        assert together[i, m.shape[0]:].abs().sum() == 0 and together[i, :, m.shape[1]:].abs().sum() == 0


def test_muon_step_renormalises_filters_and_moves_against_gradient():
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(4, 8, 3, bias=False)
    w0 = conv.weight.detach().clone()
    opt = Muon(conv.parameters(), lr=0.1, momentum=0.0, ns_dtype=torch.float32)
    conv.weight.grad = torch.randn_like(conv.weight)
    opt.step()
    scaled = w0 * math.sqrt(8) / w0.norm()
    delta = (conv.weight.detach() - scaled).reshape(8, -1)
    assert (delta * conv.weight.grad.reshape(8, -1)).sum() < 0        # descent direction
    s = torch.linalg.svdvals(delta / 0.1)
    assert s.min() > 0.5 and s.max() < 1.3                             # orthogonalised step


def test_norm_every_renormalises_only_on_every_nth_step():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(4, 8, 3, bias=False)
    opt = Muon(conv.parameters(), lr=0.5, momentum=0.0, ns_dtype=torch.float32, norm_every=3)
    for step in range(1, 7):
        w = conv.weight.detach().clone()
        conv.weight.grad = torch.randn_like(conv.weight)
        update = newton_schulz(conv.weight.grad.reshape(1, 8, -1), dtype=torch.float32)[0].view_as(w)
        opt.step()
        start = w * math.sqrt(8) / w.norm() if step % 3 == 0 else w
        assert torch.allclose(conv.weight.detach(), start - 0.5 * update, atol=1e-5), step


def test_speedrun_coefficients_differ_and_still_orthogonalise():
    torch.manual_seed(4)
    g = torch.randn(2, 16, 40, dtype=torch.float64)
    # tuned for the 3 iterations Muon runs (more drive the top singular values up again)
    x = newton_schulz(g, steps=3, dtype=torch.float64, coefficients=NS_COEFFICIENTS["speedrun"])
    assert not torch.allclose(x, newton_schulz(g, steps=3, dtype=torch.float64))
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.6 and s.max() < 1.3
    conv = torch.nn.Conv2d(2, 4, 3, bias=False)
    conv.weight.grad = torch.randn_like(conv.weight)
    opt = Muon(conv.parameters(), ns_coefficients=NS_COEFFICIENTS["speedrun"], ns_dtype=torch.float32)
    assert opt.param_groups[0]["ns_coefficients"] == NS_COEFFICIENTS["speedrun"]
    with pytest.raises(ValueError, match="norm_every"):
        Muon(conv.parameters(), norm_every=0)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_momentum_follows_the_written_rule(nesterov):
    """Over three steps, for a wide filter and a tall matrix (scaled by sqrt(rows / cols)):
    buf = momentum x buf + grad; update = grad + momentum x buf (Nesterov) or buf; each matrix
    moves by -lr x its Newton-Schulz orthogonalisation (no renormalisation: norm_every 1000)."""
    torch.manual_seed(5)
    wide, tall = torch.randn(4, 3, 3, 3), torch.randn(12, 3)
    params = [torch.nn.Parameter(wide.clone()), torch.nn.Parameter(tall.clone())]
    opt = Muon(params, lr=0.3, momentum=0.6, nesterov=nesterov, ns_dtype=torch.float32, norm_every=1000)
    expected, bufs = [wide.clone(), tall.clone()], [torch.zeros_like(wide), torch.zeros_like(tall)]
    for _ in range(3):
        for i, p in enumerate(params):
            p.grad = torch.randn_like(p)
            bufs[i] = 0.6 * bufs[i] + p.grad
            u = (p.grad + 0.6 * bufs[i] if nesterov else bufs[i]).reshape(len(p), -1)
            o = newton_schulz(u[None], dtype=torch.float32)[0]
            rows, cols = u.shape
            expected[i] -= 0.3 * (o * math.sqrt(rows / cols) if rows > cols else o).view_as(p)
        opt.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, atol=1e-5, rtol=1e-5)
