"""Image parameterizations (Lucid's pixel and FFT images with decorrelated colour)."""
import pytest
import torch

from featvis_fast.reconstruction import FFTParam, PixelParam, to_valid_rgb
from featvis_fast.reconstruction.param import COLOR_MEAN, _normalized_color_matrix


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (17, 23), (224, 224)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_fft_image_inverts_a_known_spectrum(size):
    h, w = size
    gen = torch.Generator().manual_seed(h * w)
    param = FFTParam(2, h, w, generator=gen)
    target = torch.randn(2, 3, h, w, generator=gen)
    spectrum = torch.fft.rfft2(target * 4.0) / param.scale
    with torch.no_grad():
        param.tensor.copy_(torch.view_as_real(spectrum))
    assert torch.allclose(param.linear(), target, atol=1e-4)


def test_fft_init_favours_low_frequencies_and_is_reproducible():
    a = FFTParam(4, 64, 64, generator=torch.Generator().manual_seed(0))
    b = FFTParam(4, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.tensor, b.tensor)
    img = a.linear().detach()
    power = torch.fft.rfft2(img).abs() ** 2
    from featvis_fast.reconstruction.param import rfft2_frequencies
    f = rfft2_frequencies(64, 64)
    low, high = power[..., (f > 0) & (f < 0.1)].mean(), power[..., f > 0.4].mean()
    assert low > 20 * high


def test_colour_decorrelation_and_squashing():
    gen = torch.Generator().manual_seed(1)
    t = torch.randn(2, 3, 5, 6, generator=gen)
    m = _normalized_color_matrix()
    assert torch.allclose(m.norm(dim=0).max(), torch.tensor(1.0))
    linear = to_valid_rgb(t, sigmoid=False)
    expected = torch.einsum("nchw,dc->ndhw", t, m) + COLOR_MEAN.view(1, 3, 1, 1)
    assert torch.allclose(linear, (2 * expected - 1).clamp(-1, 1) / 2 + 0.5)
    squashed = to_valid_rgb(t * 50)
    assert squashed.min() >= 0 and squashed.max() <= 1 and (squashed > 0.99).any()
    plain = to_valid_rgb(t, decorrelate=False)
    assert torch.allclose(plain, torch.sigmoid(t))


@pytest.mark.parametrize("cls", [PixelParam, FFTParam])
def test_images_are_in_range_and_differentiable(cls):
    p = cls(3, 15, 12, generator=torch.Generator().manual_seed(2))
    img = p.image()
    assert img.shape == (3, 3, 15, 12) and img.min() >= 0 and img.max() <= 1
    img[:, 0].mean().backward()
    assert p.tensor.grad is not None and p.tensor.grad.abs().sum() > 0
