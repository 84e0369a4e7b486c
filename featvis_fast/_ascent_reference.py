"""Plain PyTorch reference of the fused gradient-ascent step of the reconstruction family
(activation maximization, inversion): the `torch` backend, the test oracle and the benchmark
baseline of the coming `featvis::ascent_step` kernels. Semantics here define what every backend
computes. Images x: (N, C, H, W); everything is per image.

Regularizers (to minimize, summed per image; weights 0 switch them off):
    l1 * sum|x|  +  l2 * sum x^2  +  lp * sum|x|^p  (alpha-norm, Mahendran & Vedaldi 2015)
    + tv * sum_{c,i,j} (a^2 + b^2 + tv_eps)^(beta / 2)   (beta total variation, same paper)
with a = x[i+1, j] - x[i, j] (0 on the last row), b = x[i, j+1] - x[i, j] (0 on the last column).

One step, given the objective's gradient g_crop w.r.t. the previous step's jittered input (a
crop of x at `offsets`, see `crop`):
    g = uncrop(g_crop)                       zero outside the crop
    g = g / (mean|g| + 1e-8)  per image      when normalize (Lucid-style gradient normalization)
    d = g - grad(regularizers)(x)            ascent on the objective, descent on the regularizers
    SGD:  m = momentum * m + d;  x = x + lr * m            (torch.optim.SGD on -d, no dampening)
    Nesterov: m = momentum * m + d;  x = x + lr * (d + momentum * m)   (torch.optim.SGD(nesterov=True) on -d)
    Adam: m = b1 m + (1 - b1) d;  v = b2 v + (1 - b2) d^2;
          x = x + lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   (torch.optim.Adam on -d)
    x = clamp(x, lo, hi)                     when clip is given
    next input = crop(x, next_offsets, crop size)
Arithmetic in float32 for fp16/bf16 images (the states are float32), float64 for float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

OPTIMIZERS = ("sgd", "adam", "nesterov")


@dataclass(frozen=True)
class Regularizers:
    l1: float = 0.0
    l2: float = 0.0
    lp: float = 0.0
    p: float = 6.0
    tv: float = 0.0
    beta: float = 2.0
    tv_eps: float = 1e-8


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros_like(x)
    b = torch.zeros_like(x)
    a[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    b[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return a, b


def regularizer_values(x: torch.Tensor, r: Regularizers) -> torch.Tensor:
    """(N,) regularizer total per image."""
    dims = tuple(range(1, x.dim()))
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if r.l1:
        total = total + r.l1 * x.abs().sum(dims)
    if r.l2:
        total = total + r.l2 * (x * x).sum(dims)
    if r.lp:
        total = total + r.lp * x.abs().pow(r.p).sum(dims)
    if r.tv:
        a, b = _differences(x)
        total = total + r.tv * (a * a + b * b + r.tv_eps).pow(r.beta / 2).sum(dims)
    return total


def regularizer_grad(x: torch.Tensor, r: Regularizers) -> torch.Tensor:
    """d(regularizer_values(x).sum())/dx, written out (what the kernels compute)."""
    g = torch.zeros_like(x)
    if r.l1:
        g = g + r.l1 * torch.sign(x)
    if r.l2:
        g = g + 2 * r.l2 * x
    if r.lp:
        g = g + r.lp * r.p * x.abs().pow(r.p - 1) * torch.sign(x)
    if r.tv:
        a, b = _differences(x)
        w = r.beta * (a * a + b * b + r.tv_eps).pow(r.beta / 2 - 1)  # d/ds of s^(beta/2), times 2
        wa, wb = w * a, w * b
        tv = -(wa + wb)
        tv[..., 1:, :] += wa[..., :-1, :]
        tv[..., :, 1:] += wb[..., :, :-1]
        g = g + r.tv * tv
    return g


def crop(x: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width): image n cropped at offsets[n] = (dy, dx)."""
    return torch.stack([x[n, :, dy:dy + height, dx:dx + width] for n, (dy, dx) in enumerate(offsets.tolist())])


def uncrop(g: torch.Tensor, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width) with g[n] placed at offsets[n] and zeros elsewhere (crop's adjoint)."""
    out = g.new_zeros(g.shape[:2] + (height, width))
    h, w = g.shape[-2:]
    for n, (dy, dx) in enumerate(offsets.tolist()):
        out[n, :, dy:dy + h, dx:dx + w] = g[n]
    return out


def ascent_step(x: torch.Tensor, grad_crop: torch.Tensor, offsets: torch.Tensor, m: torch.Tensor,
                v: torch.Tensor | None, *, step: int, lr: float, optimizer: str = "sgd", momentum: float = 0.9,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, normalize: bool = False,
                regularizers: Regularizers = Regularizers(), clip: tuple[float, float] | None = None,
                next_offsets: torch.Tensor | None = None, crop_size: tuple[int, int] | None = None):
    """One step (see the module docstring) -> (x, m, v, next input). step counts from 1 (Adam's
    bias correction); m, v: float32 (float64 for float64 x) states shaped like x (v None for SGD and
    Nesterov)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    xw = x.to(wide)
    g = uncrop(grad_crop.to(wide), offsets, x.shape[-2], x.shape[-1])
    if normalize:
        g = g / (g.abs().mean(dim=tuple(range(1, g.dim())), keepdim=True) + 1e-8)
    d = g - regularizer_grad(xw, regularizers)
    if optimizer == "sgd":
        m = momentum * m + d
        xw = xw + lr * m
    elif optimizer == "nesterov":
        m = momentum * m + d
        xw = xw + lr * (d + momentum * m)
    else:
        b1, b2 = betas
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        xw = xw + lr * (m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt() + eps)
    if clip is not None:
        xw = xw.clamp(clip[0], clip[1])
    x_new = xw.to(x.dtype)
    if next_offsets is None:
        return x_new, m, v, x_new
    h, w = crop_size if crop_size is not None else grad_crop.shape[-2:]
    return x_new, m, v, crop(x_new, next_offsets, h, w)
