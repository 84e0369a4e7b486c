"""What an occluded region is filled with: fill(x) -> (B, C, H, W) tensor like x.

  number             that value everywhere (Captum's baseline; 0 by default)
  sequence / (C,)    one value per channel
  (B, C, H, W)       a baseline image per sample (Captum's tensor baselines)
  "mean"             minus each image's per-channel mean (FeatureVis' default box colour: for a
                     mean-subtracted input this is roughly the negative average colour)
  "blur"             a Gaussian blur of the image (sigma = `blur_sigma`, in pixels)
  "noise"            Gaussian noise with each image's per-channel mean and std, drawn from
                     `generator` (reproducible)
"""
from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F

NAMED = ("mean", "blur", "noise")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, radius 3 sigma (at least 1 pixel)."""
    radius = max(1, int(3 * sigma + 0.5))
    radius = min(radius, x.shape[-2] - 1, x.shape[-1] - 1) if min(x.shape[-2:]) > 1 else 0
    if radius == 0:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(dtype=x.dtype, device=x.device)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_fill(x: torch.Tensor, fill, *, blur_sigma: float = 8.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The fill tensor for images x (B, C, H, W): same shape, dtype, device and layout as x."""
    b, c = x.shape[:2]
    if isinstance(fill, str):
        if fill == "mean":
            out = (-x.mean(dim=(2, 3), keepdim=True)).expand_as(x)
        elif fill == "blur":
            if not (isinstance(blur_sigma, Real) and blur_sigma > 0):
                raise ValueError(f"blur_sigma must be a number > 0, got {blur_sigma!r}")
            out = _gaussian_blur(x, float(blur_sigma))
        elif fill == "noise":
            mean, std = x.mean(dim=(2, 3), keepdim=True), x.std(dim=(2, 3), keepdim=True).nan_to_num(0.0)
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else "cpu")
            out = mean + std * noise.to(device=x.device, dtype=x.dtype)
        else:
            raise ValueError(f"fill must be a number, per-channel values, a tensor or one of {NAMED}, got {fill!r}")
    elif isinstance(fill, Real) and not isinstance(fill, bool):
        out = torch.full((1, 1, 1, 1), float(fill), dtype=x.dtype, device=x.device).expand_as(x)
    else:
        values = torch.as_tensor(fill, dtype=x.dtype, device=x.device) if not isinstance(fill, torch.Tensor) \
            else fill.to(dtype=x.dtype, device=x.device)
        if values.dim() == 1 and values.numel() == c:
            out = values.view(1, c, 1, 1).expand_as(x)
        elif values.shape == x.shape or (values.dim() == 4 and values.shape[0] == 1
                                         and values.shape[1:] == x.shape[1:]):
            out = values.expand_as(x)
        else:
            raise ValueError(f"fill values must be a number, ({c},) per-channel values or a {tuple(x.shape)} "
                             f"tensor, got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("fill contains NaN or infinite values")
    layout = torch.channels_last if (x.dim() == 4 and not x.is_contiguous()
                                     and x.is_contiguous(
                                         memory_format=torch.channels_last)) else torch.contiguous_format
    return out.contiguous(memory_format=layout)
