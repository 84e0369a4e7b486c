"""Image filters of the reconstruction family, on the device: Gaussian blur (Yosinski et al.
2015's periodic blur regularizer; Stergiou 2021's blur) with reflected borders, total-variation
denoising (Chambolle 2004; Stergiou 2021's periodic denoise) and Stergiou's centre mask that
blends them in. Images (N, C, H, W)."""
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


def tv_denoise(x: torch.Tensor, weight: float, iterations: int = 50) -> torch.Tensor:
    """(N, C, H, W) denoised per channel by Chambolle's projection algorithm (Chambolle 2004) for
    the ROF problem  min_u 1/2 ||u - x||^2 + weight * TV(u),  TV the isotropic total variation of
    each channel (forward differences, none across the last row / column). Fixed `iterations`,
    counted as scikit-image's denoise_tv_chambolle counts max_num_iter (its early stop left out):
    the result is x - div p after iterations - 1 updates of the dual field p with step 1/4.
    weight <= 0 or iterations <= 1: x unchanged. Larger weights smooth more."""
    if weight <= 0 or iterations <= 1:
        return x
    tau = 0.25
    py, px = torch.zeros_like(x), torch.zeros_like(x)
    gy, gx = torch.zeros_like(x), torch.zeros_like(x)  # forward differences; 0 on the last row / column
    out = x
    for i in range(iterations):
        if i > 0:  # out = x - div p (backward differences of p; p is 0 past the last row / column)
            out = x - py - px
            out[..., 1:, :] += py[..., :-1, :]
            out[..., :, 1:] += px[..., :, :-1]
        if i == iterations - 1:
            break
        torch.sub(out[..., 1:, :], out[..., :-1, :], out=gy[..., :-1, :])
        torch.sub(out[..., :, 1:], out[..., :, :-1], out=gx[..., :, :-1])
        norm = torch.hypot(gy, gx).mul_(tau / weight).add_(1.0)
        py.sub_(gy, alpha=tau).div_(norm)
        px.sub_(gx, alpha=tau).div_(norm)
    return out


def centre_distance(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h, w) distance of each pixel from the centre pixel (h // 2, w // 2)."""
    y = torch.arange(h, device=device, dtype=dtype).sub_(h // 2)
    x = torch.arange(w, device=device, dtype=dtype).sub_(w // 2)
    return torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)


def centre_mask(distance: torch.Tensor, sigma: float) -> torch.Tensor:
    """Stergiou 2021's centre mask from a centre_distance map r: exp(-((r - 1) / sigma)^2 / 2)
    (a Gaussian ring of radius 1 around the centre, std `sigma` pixels) rescaled to span [0, 1]
    (all ones when it is flat)."""
    m = torch.exp(-0.5 * ((distance - 1.0) / sigma) ** 2)
    lo, hi = m.min(), m.max()
    return torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(torch.finfo(m.dtype).tiny), torch.ones_like(m))
