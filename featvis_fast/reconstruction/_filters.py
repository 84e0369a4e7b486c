"""Image filters of the reconstruction family, on the device: Gaussian blur (Yosinski et al.
2015's periodic blur regularizer; Stergiou 2021's blur) with reflected borders. Images (N, C, H, W)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """(2r + 1,) normalized Gaussian taps, r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred per channel by a separable Gaussian of std `sigma` pixels (sigma <= 0: x)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma, x.dtype, x.device)
    c, r = x.shape[1], k.numel() // 2
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
