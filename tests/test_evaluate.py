"""TTA views, shifts and selective TTA against direct computations."""
import pytest
import torch

from fastres.evaluate import predict_logits, shift, tta_views


class Probe(torch.nn.Module):
    """Logits that depend on position and mirroring, so each TTA view gives different logits."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):                                     # (N, 1, 6, 6) -> (N, 3)
        return (x[:, None] * self.w[None]).sum((2, 3, 4))


def test_shift_moves_content_and_reflects_at_borders():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    up_left = shift(x, -1, -1)
    assert torch.equal(up_left[0, 0, :3, :3], x[0, 0, 1:, 1:])
    assert torch.equal(up_left[0, 0, 3, :3], x[0, 0, 2, 1:])          # reflect: row 4 -> row 2
    assert torch.equal(shift(x, 1, 1)[0, 0, 1:, 1:], x[0, 0, :3, :3])
    assert torch.equal(shift(x, 0, 0), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_shift_matches_reflect_padding(dtype):
    # The gather equals padding mode "reflect" then a crop, in both layouts a run uses.
    x = torch.randn(3, 2, 7, 5).to(dtype)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xm = x.contiguous(memory_format=memory_format)
        for dy, dx in ((-1, -1), (1, 1), (2, -1), (0, 3)):
            p = max(abs(dy), abs(dx))
            padded = torch.nn.functional.pad(x.float(), (p, p, p, p), mode="reflect")
            expected = padded[..., p - dy:p - dy + 7, p - dx:p - dx + 5].to(dtype)
            assert torch.equal(shift(xm, dy, dx), expected)


def test_tta_levels_average_their_views():
    for level in (0, 1, 2):
        assert abs(sum(w for w, *_ in tta_views(level)) - 1) < 1e-12
    model, x = Probe(), torch.randn(5, 1, 6, 6)
    assert torch.allclose(predict_logits(model, x, 0, batch_size=2), model(x), atol=1e-6)
    # level 1: the image and its mirror, equally weighted (airbench's TTA level 1)
    assert torch.allclose(predict_logits(model, x, 1, batch_size=2),
                          0.5 * (model(x) + model(x.flip(-1))), atol=1e-5)
    expected = 0.25 * (model(x) + model(x.flip(-1)))
    for d in (-1, 1):
        v = shift(x, d, d)
        expected += 0.125 * (model(v) + model(v.flip(-1)))
    assert torch.allclose(predict_logits(model, x, 2, batch_size=2), expected, atol=1e-5)


def test_selective_tta_replaces_only_least_confident():
    model, x = Probe(), torch.randn(40, 1, 6, 6)
    plain, full = predict_logits(model, x, 0), predict_logits(model, x, 2)
    sel = predict_logits(model, x, 2, fraction=0.25)
    confidence = plain.softmax(1).amax(1)
    unsure = confidence.argsort()[:10]
    sure = confidence.argsort()[10:]
    assert torch.allclose(sel[unsure], full[unsure], atol=1e-5) and torch.equal(sel[sure], plain[sure])
    assert torch.equal(predict_logits(model, x, 2, fraction=1.0), full)
