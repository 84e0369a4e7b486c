"""PyTorch reference of the extremal-perturbation hot path (Fong, Patrick & Vedaldi, ICCV 2019,
"Understanding Deep Networks via Extremal Perturbations and Smooth Masks"): the semantics every
backend of featvis::smooth_masks / featvis::blend_levels computes, the float64 path and the
tests' oracle. Definitions follow TorchRay's `MaskGenerator` and `Perturbation`.

Smooth masks. A mask is parameterized by a coarse grid p (h, w) = ceil((H, W) / step), values in
[0, 1]. Pixel u = (uy, ux) of the full mask (with a margin of sigma pixels on each side) looks at
the R x R parameters (R = 2 * radius + 1) around the cell uy // step, ux // step:

    v_k(u) = w_k(u mod step) * p[uy // step + ky - padding, ux // step + kx - padding]   (0 outside p)
    w_k(a) = exp(-2 * max(d_k(a) / sigma - 1/2, 0)^2),  d_k(a) = |a - margin - step * (k - padding)|
    mask(u) = clamp(sum_k v_k(u) * softmax_k(coldness * v(u)), 0, 1)

(a smooth max-pooling of bumps of radius ~sigma centred every `step` pixels). The image-sized
mask is the full one cropped at round(margin).

Blended levels. A perturbation pyramid y (L, C, H, W) holds the image perturbed at L strengths
(level L - 1 is the image itself); a mask m in [0, 1] picks, per pixel, the linear interpolation
between levels floor(m (L - 1)) and the next one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

COLDNESS = 20.0


@dataclass(frozen=True)
class MaskGeometry:
    """The sizes of TorchRay's MaskGenerator for an (height, width) image.

    Attributes:
        step: the parameter grid's spacing in pixels.
        sigma: the bumps' scale in pixels (also the margin).
        padding, radius: the parameter grid's zero padding and neighbourhood radius, in cells.
        shape_in: (h, w) of the parameter grid.
        shape_out: (Ho, Wo) of the full mask (margin included).
        crop: the margin cut from each side to give the image-sized mask.
    """

    height: int
    width: int
    step: int
    sigma: float
    padding: int
    radius: int
    shape_in: tuple[int, int]
    shape_out: tuple[int, int]
    crop: int

    @property
    def taps(self) -> int:
        """R * R, the parameters one pixel of the mask looks at."""
        return (2 * self.radius + 1) ** 2


def mask_geometry(height: int, width: int, step: int, sigma: float) -> MaskGeometry:
    """TorchRay's MaskGenerator sizes (margin = sigma).

    Args:
        height, width: the image size.
        step: parameter spacing in pixels (int >= 1).
        sigma: bump scale in pixels (> 0).

    Returns:
        A MaskGeometry.
    """
    margin = float(sigma)
    padding = 1 + math.ceil((margin + sigma) / step)
    radius = 1 + math.ceil(sigma / step)
    shape_in = (math.ceil(height / step), math.ceil(width / step))
    mid = tuple(z + 2 * padding - (2 * radius + 1) + 1 for z in shape_in)
    shape_out = tuple(step * z - step + 1 for z in mid)
    return MaskGeometry(height, width, step, float(sigma), padding, radius, shape_in, shape_out, round(margin))


def tap_weights(geometry: MaskGeometry, dtype: torch.dtype) -> torch.Tensor:
    """w_k(a) for every offset a = (ay, ax) in the step x step cell and tap k: (step, step, R * R).

    Computed in `dtype` (TorchRay computes them in float32)."""
    g, side = geometry, 2 * geometry.radius + 1
    a = torch.arange(g.step, dtype=dtype)
    k = torch.arange(side, dtype=dtype)
    d = a[:, None] - g.sigma - g.step * (k[None, :] - g.padding)  # (step, R): offset along one axis
    dist = torch.sqrt(d[:, None, :, None] ** 2 + d[None, :, None, :] ** 2)  # (ay, ax, ky, kx)
    return torch.exp(-2 * (dist / g.sigma - 0.5).clamp(min=0) ** 2).reshape(g.step, g.step, side * side)


def _tap_weights_full(weights: torch.Tensor, shape_out: tuple[int, int]) -> torch.Tensor:
    """w_k(u mod step) at every full-mask pixel: (R * R, Ho, Wo)."""
    step = weights.shape[0]
    ry = torch.arange(shape_out[0], device=weights.device) % step
    rx = torch.arange(shape_out[1], device=weights.device) % step
    return weights[ry[:, None], rx[None, :]].permute(2, 0, 1)


def _taps(params: torch.Tensor, weights: torch.Tensor, padding: int, shape_out: tuple[int, int]) -> torch.Tensor:
    """v (K, R * R, Ho, Wo): each pixel's weighted neighbourhood of parameters (TorchRay: unfold,
    nearest upsampling by step, crop, times the weights)."""
    k, h, w = params.shape
    step, taps = weights.shape[0], weights.shape[2]
    side = math.isqrt(taps)
    cols = F.unfold(params[:, None], (side, side), padding=padding)  # (K, taps, mid_h * mid_w)
    mid_h, mid_w = h + 2 * padding - side + 1, w + 2 * padding - side + 1
    cols = cols.reshape(k, taps, mid_h, mid_w)
    up = cols.repeat_interleave(step, dim=2).repeat_interleave(step, dim=3)[:, :, :shape_out[0], :shape_out[1]]
    return up * _tap_weights_full(weights, shape_out).to(params.dtype)


def smooth_masks(params: torch.Tensor, weights: torch.Tensor, padding: int, coldness: float,
                 shape_out: tuple[int, int]) -> torch.Tensor:
    """params (K, h, w), weights (step, step, R * R) -> full masks (K, Ho, Wo) in [0, 1]."""
    v = _taps(params, weights, padding, shape_out)
    pooled = (v * torch.softmax(coldness * v, dim=1)).sum(dim=1)
    return pooled.clamp(0, 1)


def smooth_masks_backward(grad: torch.Tensor, params: torch.Tensor, weights: torch.Tensor, padding: int,
                          coldness: float) -> torch.Tensor:
    """d(sum grad * smooth_masks(params))/d params: grad (K, Ho, Wo) -> (K, h, w).

    d pooled / d v_k = s_k (1 + coldness (v_k - pooled)) with s = softmax(coldness v); the clamp
    passes the gradient where 0 <= pooled <= 1 (torch.clamp's rule); the taps' adjoint sums each
    step x step block and folds (F.fold, the adjoint of F.unfold)."""
    k, h, w = params.shape
    step, taps = weights.shape[0], weights.shape[2]
    side = math.isqrt(taps)
    shape_out = tuple(grad.shape[1:])
    v = _taps(params, weights, padding, shape_out)
    s = torch.softmax(coldness * v, dim=1)
    pooled = (v * s).sum(dim=1, keepdim=True)
    g = (grad * ((pooled >= 0) & (pooled <= 1))[:, 0])[:, None]
    dv = g * s * (1 + coldness * (v - pooled)) * _tap_weights_full(weights, shape_out).to(params.dtype)
    mid_h, mid_w = h + 2 * padding - side + 1, w + 2 * padding - side + 1
    dv = F.pad(dv, (0, mid_w * step - shape_out[1], 0, mid_h * step - shape_out[0]))
    dcols = dv.reshape(k, taps, mid_h, step, mid_w, step).sum(dim=(3, 5)).reshape(k, taps, mid_h * mid_w)
    return F.fold(dcols, (h, w), (side, side), padding=padding)[:, 0]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """TorchRay's imsmooth: separable Gaussian of standard deviation sigma, half-width
    ceil(4 sigma), normalized to sum 1, zero padding; x (N, C, H, W) -> the same shape."""
    width = math.ceil(4 * sigma)
    taps = torch.arange(-width, width + 1, dtype=x.dtype, device=x.device) / (math.sqrt(2) * sigma
                                                                               + torch.finfo(torch.float32).eps)
    taps = torch.exp(-taps * taps)
    taps = taps / taps.sum()
    c = x.shape[1]
    x = F.conv2d(x, taps.reshape(1, 1, -1, 1).expand(c, -1, -1, -1), padding=(width, 0), groups=c)
    return F.conv2d(x, taps.reshape(1, 1, 1, -1).expand(c, -1, -1, -1), padding=(0, width), groups=c)


def pyramid(x: torch.Tensor, levels: int, kind: str, max_blur: float) -> torch.Tensor:
    """The perturbation pyramid (B, L, C, H, W) of x (B, C, H, W): level l is x blurred with sigma
    (1 - l / (L - 1)) * max_blur ("blur") or x * l / (L - 1) ("fade"); level L - 1 is x."""
    out = []
    for t in torch.linspace(0, 1, levels, dtype=torch.float64).tolist():
        out.append(gaussian_blur(x, (1 - t) * max_blur) if kind == "blur" else x * t)
    return torch.stack(out, dim=1)


def _levels(pyr: torch.Tensor, masks: torch.Tensor, src: torch.Tensor, complement: bool):
    levels = pyr.shape[1]
    m = (1 - masks) if complement else masks
    w = m[:, None, None] * (levels - 1)  # (N, 1, 1, H, W)
    k = w.floor()
    w = w - k
    k = k.long().clamp(0, levels - 1)
    y = pyr[src.long()]  # (N, L, C, H, W)
    k = k.expand(-1, 1, *y.shape[2:])
    y0 = torch.gather(y, 1, k)
    y1 = torch.gather(y, 1, (k + 1).clamp(max=levels - 1))
    return w, y0, y1


def blend_levels(pyr: torch.Tensor, masks: torch.Tensor, src: torch.Tensor, complement: bool,
                 flip: bool) -> torch.Tensor:
    """pyr (B, L, C, H, W), masks (N, H, W) in [0, 1], src (N,) image indices -> (N, C, H, W):
    each pixel interpolated between the pyramid levels its mask value (1 - mask with complement)
    falls between; flip mirrors the result left-right (TorchRay's jitter)."""
    w, y0, y1 = _levels(pyr, masks, src, complement)
    out = ((1 - w) * y0 + w * y1).squeeze(1)
    return out.flip(-1) if flip else out


def blend_levels_backward(grad: torch.Tensor, pyr: torch.Tensor, masks: torch.Tensor, src: torch.Tensor,
                          complement: bool, flip: bool) -> torch.Tensor:
    """d(sum grad * blend_levels(...))/d masks: grad (N, C, H, W) -> (N, H, W)."""
    if flip:
        grad = grad.flip(-1)
    _, y0, y1 = _levels(pyr, masks, src, complement)
    sign = -1.0 if complement else 1.0
    return sign * (pyr.shape[1] - 1) * (grad[:, None] * (y1 - y0)).sum(dim=2).squeeze(1)
