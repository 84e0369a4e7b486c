"""Robustness transforms: shapes, reproducible by seed, per-image draws, identities, gradients."""
import pytest
import torch

from featvis_fast.reconstruction.transforms import STANDARD, Compose, Jitter, Pad, ScaleRotate, preset


def _x(n=4, h=32, w=40):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_standard_preset_shapes_and_reproducibility():
    x = _x()
    a = STANDARD(x, torch.Generator().manual_seed(5))
    b = STANDARD(x, torch.Generator().manual_seed(5))
    c = STANDARD(x, torch.Generator().manual_seed(6))
    assert a.shape == (4, 3, 32 + 24 - 12, 40 + 24 - 12)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_jitter_is_a_crop_with_its_own_offset_per_image():
    x = _x(n=6)
    out = Jitter(5)(x, torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, 27, 35)
    offsets = set()
    for n in range(6):
        found = [(dy, dx) for dy in range(6) for dx in range(6) if torch.equal(out[n], x[n, :, dy:dy + 27, dx:dx + 35])]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1


def test_identities_and_pad_value():
    x = _x()
    gen = torch.Generator().manual_seed(2)
    assert torch.allclose(ScaleRotate([1.0], [0.0])(x, gen), x, atol=1e-6)
    assert torch.equal(Jitter(0)(x, gen), x)
    padded = Pad(3, 0.25)(x, gen)
    assert padded.shape == (4, 3, 38, 46) and bool((padded[:, :, :3] == 0.25).all())
    assert torch.equal(preset("none")(x, gen), x)


def test_rotation_by_180_degrees_flips_the_image():
    x = _x(h=16, w=16)
    out = ScaleRotate([1.0], [180.0])(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.flip(-1).flip(-2), atol=1e-5)


def test_gradients_flow_and_bad_presets_fail():
    x = _x().requires_grad_()
    STANDARD(x, torch.Generator().manual_seed(3)).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown transforms preset"):
        preset("fancy")
    assert isinstance(preset([Jitter(2)]), Compose)
