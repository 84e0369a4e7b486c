"""Image parameterizations for activation maximization (Olah, Mordvintsev & Schubert 2017, Lucid).

PixelParam   the image's pre-squash values directly, initialized N(0, sd^2).
FFTParam     the image as a real 2-D FFT spectrum (real and imaginary parts, N(0, sd^2)), scaled
             by 1 / max(frequency, 1 / max(H, W))^decay_power * sqrt(H * W) so that steps favour
             low frequencies, brought back by irfft2 and divided by 4 (Lucid's fft_image).
to_valid_rgb decorrelated colour (Lucid's colour-correlation SVD square root, normalized by its
             largest column norm) and a sigmoid into [0, 1], or clipping: 2t-1 clamped to [-1, 1],
             then halved and shifted into [0, 1] (Lucid's constrain_L_inf).
Where this differs from Lucid: for odd widths Lucid keeps w // 2 + 2 frequency columns and crops
after the inverse FFT; here the spectrum has the exact w // 2 + 1 columns of an rfft2.
All parameters are created from a torch.Generator, so a seed gives the same images on any device.
Shapes: parameters (N, 3, H, W // 2 + 1, 2) for FFT, (N, 3, H, W) for pixels; images (N, 3, H, W).
"""
from __future__ import annotations

import torch

COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MEAN = torch.tensor([0.48, 0.46, 0.41])


def _normalized_color_matrix() -> torch.Tensor:
    return COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


def to_valid_rgb(t: torch.Tensor, *, decorrelate: bool = True, sigmoid: bool = True) -> torch.Tensor:
    """(N, 3, H, W) unconstrained values -> an image in [0, 1]."""
    if decorrelate:
        m = _normalized_color_matrix().to(device=t.device, dtype=t.dtype)
        t = torch.einsum("nchw,dc->ndhw", t, m)
        if not sigmoid:
            t = t + COLOR_MEAN.to(device=t.device, dtype=t.dtype).view(1, 3, 1, 1)
    if sigmoid:
        return torch.sigmoid(t)
    return (2 * t - 1).clamp(-1, 1) / 2 + 0.5


def rfft2_frequencies(height: int, width: int) -> torch.Tensor:
    """(H, W // 2 + 1) radial frequency of each rfft2 coefficient (cycles per pixel)."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class PixelParam:
    """Pixels as parameters: `tensor` (N, 3, H, W) requires grad; `image()` -> (N, 3, H, W) in [0, 1]."""

    def __init__(self, n: int, height: int, width: int, *, sd: float = 0.01, generator: torch.Generator,
                 device="cpu", decorrelate: bool = True, sigmoid: bool = True) -> None:
        values = torch.randn(n, 3, height, width, generator=generator) * sd
        self.tensor = values.to(device).requires_grad_(True)
        self.decorrelate, self.sigmoid = decorrelate, sigmoid

    def image(self) -> torch.Tensor:
        return self.image_of(self.tensor)

    def flat(self) -> torch.Tensor:
        """The parameters as an image-shaped (N, 3, H, W) tensor (what the fused step updates)."""
        return self.tensor.detach()

    def image_of(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) parameters (any crop of `flat()`) -> the image in [0, 1]; differentiable."""
        return to_valid_rgb(flat, decorrelate=self.decorrelate, sigmoid=self.sigmoid)


class FFTParam:
    """A spectrum as parameters: `tensor` (N, 3, H, W // 2 + 1, 2) requires grad; `image()` ->
    (N, 3, H, W) in [0, 1]."""

    def __init__(self, n: int, height: int, width: int, *, sd: float = 0.01, decay_power: float = 1.0,
                 generator: torch.Generator, device="cpu", decorrelate: bool = True, sigmoid: bool = True) -> None:
        freqs = rfft2_frequencies(height, width)
        values = torch.randn(n, 3, *freqs.shape, 2, generator=generator) * sd
        self.tensor = values.to(device).requires_grad_(True)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(height, width)) ** decay_power
        self.scale = (scale * (height * width) ** 0.5).to(device)
        self.size = (height, width)
        self.decorrelate, self.sigmoid = decorrelate, sigmoid

    def linear(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) before the colour transform: irfft2 of the scaled spectrum, / 4."""
        values = self.tensor if values is None else values
        spectrum = torch.view_as_complex(values.float().contiguous()) * self.scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="backward") / 4.0

    def image(self) -> torch.Tensor:
        return to_valid_rgb(self.linear(), decorrelate=self.decorrelate, sigmoid=self.sigmoid)

    def flat(self) -> torch.Tensor:
        """The spectrum as an image-shaped (N, 3, H, 2 (W // 2 + 1)) tensor (what the fused step updates)."""
        return self.tensor.detach().flatten(-2)

    def image_of(self, flat: torch.Tensor) -> torch.Tensor:
        """flat() -> the image (N, 3, H, W) in [0, 1]; differentiable."""
        values = flat.unflatten(-1, (flat.shape[-1] // 2, 2))
        return to_valid_rgb(self.linear(values), decorrelate=self.decorrelate, sigmoid=self.sigmoid)
