"""Triton kernels for the extremal-perturbation ops (semantics: featvis_fast._extremal_reference).

`_smooth_masks_kernel`: one program per (mask k, block of full-mask pixels); two passes over the
R * R taps (the maximum logit, then the exponentials), vectorized over the block's pixels.
The backward runs in two kernels: `_mask_stats_kernel` keeps, per pixel, the softmax maximum,
the pooled value and g / sum (0 where the clamp is active); `_smooth_masks_backward_kernel` then
gathers, per parameter, the contributions of the pixels whose taps read it (no atomics).
`_blend_levels_kernel` / `_blend_levels_backward_kernel`: one program per (copy n, block of
pixels), a loop over the channels. fp32 throughout.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _taps_of(params_k, weights, pix, Wo, h, w, step, side, t, padding, TAPS: tl.constexpr):
    """v_t of a block of full-mask pixels (flat index pix) for tap t."""
    uy = pix // Wo
    ux = pix % Wo
    ty = t // side
    tx = t % side
    iy = uy // step + ty - padding
    ix = ux // step + tx - padding
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    p = tl.load(params_k + iy * w + ix, mask=inside, other=0.0)
    wt = tl.load(weights + ((uy % step) * step + ux % step) * TAPS + t)
    return wt * p


@triton.jit
def _pool(params_k, weights, pix, live, Wo, h, w, step, side, padding, coldness, TAPS: tl.constexpr,
          BLOCK: tl.constexpr):
    """(pooled, max logit, sum of exponentials) of a block of pixels."""
    m = tl.full((BLOCK,), float("-inf"), tl.float32)
    for t in range(TAPS):
        v = _taps_of(params_k, weights, tl.where(live, pix, 0), Wo, h, w, step, side, t, padding, TAPS)
        m = tl.maximum(m, coldness * v)
    s = tl.zeros((BLOCK,), tl.float32)
    a = tl.zeros((BLOCK,), tl.float32)
    for t in range(TAPS):
        v = _taps_of(params_k, weights, tl.where(live, pix, 0), Wo, h, w, step, side, t, padding, TAPS)
        e = tl.exp(coldness * v - m)
        s += e
        a += v * e
    return a / s, m, s


@triton.jit
def _smooth_masks_kernel(params, weights, out, h, w, Ho, Wo, step, side, padding, coldness,
                         TAPS: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = pix < Ho * Wo
    pooled, _, _ = _pool(params + k * h * w, weights, pix, live, Wo, h, w, step, side, padding, coldness, TAPS, BLOCK)
    tl.store(out + k * Ho * Wo + pix, tl.minimum(tl.maximum(pooled, 0.0), 1.0), mask=live)


@triton.jit
def _mask_stats_kernel(params, weights, grad, stats, h, w, Ho, Wo, step, side, padding, coldness,
                       TAPS: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = pix < Ho * Wo
    pooled, m, s = _pool(params + k * h * w, weights, pix, live, Wo, h, w, step, side, padding, coldness, TAPS, BLOCK)
    g = tl.load(grad + k * Ho * Wo + pix, mask=live, other=0.0)
    passes = (pooled >= 0.0) & (pooled <= 1.0)
    base = stats + k * 3 * Ho * Wo + pix
    tl.store(base, m, mask=live)
    tl.store(base + Ho * Wo, pooled, mask=live)
    tl.store(base + 2 * Ho * Wo, tl.where(passes, g / s, 0.0), mask=live)


@triton.jit
def _smooth_masks_backward_kernel(params, weights, stats, out, h, w, Ho, Wo, step, side, padding, coldness,
                                  TAPS: tl.constexpr, BLOCK: tl.constexpr):
    k = tl.program_id(0)
    q = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = q < h * w
    iy = q // w
    ix = q % w
    p = tl.load(params + k * h * w + q, mask=live, other=0.0)
    acc = tl.zeros((BLOCK,), tl.float32)
    base = stats + k * 3 * Ho * Wo
    for t in range(TAPS):
        ty = t // side
        tx = t % side
        cy = iy - ty + padding  # the cell whose tap t reads this parameter
        cx = ix - tx + padding
        for a in range(step * step):
            uy = cy * step + a // step
            ux = cx * step + a % step
            ok = live & (cy >= 0) & (cx >= 0) & (uy < Ho) & (ux < Wo)
            pix = tl.where(ok, uy * Wo + ux, 0)
            coef = tl.load(base + 2 * Ho * Wo + pix, mask=ok, other=0.0)
            m = tl.load(base + pix, mask=ok, other=0.0)
            pooled = tl.load(base + Ho * Wo + pix, mask=ok, other=0.0)
            wt = tl.load(weights + a * TAPS + t)
            v = wt * p
            e = tl.exp(coldness * v - m)
            acc += tl.where(ok, coef * e * (1.0 + coldness * (v - pooled)) * wt, 0.0)
    tl.store(out + k * h * w + q, acc, mask=live)


@triton.jit
def _level_of(masks, n, pix, live, HW, L, COMPLEMENT: tl.constexpr):
    m = tl.load(masks + n * HW + pix, mask=live, other=0.0)
    if COMPLEMENT:
        m = 1.0 - m
    wl = m * (L - 1).to(tl.float32)
    k = tl.floor(wl)
    f = wl - k
    k0 = tl.minimum(tl.maximum(k.to(tl.int32), 0), L - 1)
    k1 = tl.minimum(k0 + 1, L - 1)
    return k0, k1, f


@triton.jit
def _blend_levels_kernel(pyramid, masks, src, out, L, C, H, W, COMPLEMENT: tl.constexpr, FLIP: tl.constexpr,
                         NHWC: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # output pixel
    HW = H * W
    live = pix < HW
    y = pix // W
    x = pix % W
    if FLIP:
        x = W - 1 - x
    mpix = y * W + x
    k0, k1, f = _level_of(masks, n, mpix, live, HW, L, COMPLEMENT)
    image = pyramid + tl.load(src + n).to(tl.int64) * L * C * HW
    for c in range(C):
        y0 = tl.load(image + (k0 * C + c) * HW + mpix, mask=live, other=0.0)
        y1 = tl.load(image + (k1 * C + c) * HW + mpix, mask=live, other=0.0)
        value = (1.0 - f) * y0 + f * y1
        if NHWC:
            tl.store(out + (n * HW + pix) * C + c, value, mask=live)
        else:
            tl.store(out + (n * C + c) * HW + pix, value, mask=live)


@triton.jit
def _blend_levels_backward_kernel(grad, pyramid, masks, src, out, L, C, H, W, COMPLEMENT: tl.constexpr,
                                  FLIP: tl.constexpr, NHWC: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0)
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # output pixel of the forward
    HW = H * W
    live = pix < HW
    y = pix // W
    x = pix % W
    if FLIP:
        x = W - 1 - x
    mpix = y * W + x
    k0, k1, f = _level_of(masks, n, mpix, live, HW, L, COMPLEMENT)
    image = pyramid + tl.load(src + n).to(tl.int64) * L * C * HW
    acc = tl.zeros((BLOCK,), tl.float32)
    for c in range(C):
        y0 = tl.load(image + (k0 * C + c) * HW + mpix, mask=live, other=0.0)
        y1 = tl.load(image + (k1 * C + c) * HW + mpix, mask=live, other=0.0)
        if NHWC:
            g = tl.load(grad + (n * HW + pix) * C + c, mask=live, other=0.0)
        else:
            g = tl.load(grad + (n * C + c) * HW + pix, mask=live, other=0.0)
        acc += g * (y1 - y0)
    scale = (L - 1).to(tl.float32)
    if COMPLEMENT:
        scale = -scale
    tl.store(out + n * HW + mpix, scale * acc, mask=live)


def _block(device: torch.device, size: int) -> int:
    cap = 4096 if device.type == "cpu" else 256  # interpreter: few large numpy blocks
    return min(cap, triton.next_power_of_2(max(size, 1)))


def _side(weights: torch.Tensor) -> int:
    return round(weights.shape[2] ** 0.5)


def smooth_masks_triton(params: torch.Tensor, weights: torch.Tensor, padding: int, coldness: float,
                        out: torch.Tensor) -> None:
    """params (K, h, w), weights (step, step, R * R) fp32 contiguous; writes out (K, Ho, Wo)."""
    k, h, w = params.shape
    _, ho, wo = out.shape
    if k == 0 or ho * wo == 0:
        return
    block = _block(params.device, ho * wo)
    _smooth_masks_kernel[(k, triton.cdiv(ho * wo, block))](params, weights, out, h, w, ho, wo, weights.shape[0],
                                                           _side(weights), padding, coldness,
                                                           TAPS=weights.shape[2], BLOCK=block)


def smooth_masks_backward_triton(grad: torch.Tensor, params: torch.Tensor, weights: torch.Tensor, padding: int,
                                 coldness: float, out: torch.Tensor) -> None:
    """grad (K, Ho, Wo), params (K, h, w) fp32 contiguous; writes out (K, h, w) = d(sum grad * masks)/d params."""
    k, h, w = params.shape
    _, ho, wo = grad.shape
    if k == 0:
        return
    stats = torch.empty((k, 3, ho, wo), dtype=torch.float32, device=params.device)
    block = _block(params.device, ho * wo)
    step, side = weights.shape[0], _side(weights)
    _mask_stats_kernel[(k, triton.cdiv(ho * wo, block))](params, weights, grad, stats, h, w, ho, wo, step, side,
                                                         padding, coldness, TAPS=weights.shape[2], BLOCK=block)
    block = _block(params.device, h * w)
    _smooth_masks_backward_kernel[(k, triton.cdiv(h * w, block))](params, weights, stats, out, h, w, ho, wo, step,
                                                                  side, padding, coldness, TAPS=weights.shape[2],
                                                                  BLOCK=block)


def blend_levels_triton(pyramid: torch.Tensor, masks: torch.Tensor, src: torch.Tensor, complement: bool, flip: bool,
                        nhwc: bool, out: torch.Tensor) -> None:
    """pyramid (B, L, C, H, W), masks (N, H, W) fp32, src (N,) int32; writes out (N, C, H, W), or
    (N, H, W, C) when nhwc."""
    _, levels, c, h, w = pyramid.shape
    n = masks.shape[0]
    if n == 0 or h * w == 0:
        return
    block = _block(pyramid.device, h * w)
    _blend_levels_kernel[(n, triton.cdiv(h * w, block))](pyramid, masks, src, out, levels, c, h, w,
                                                         COMPLEMENT=bool(complement), FLIP=bool(flip),
                                                         NHWC=bool(nhwc), BLOCK=block)


def blend_levels_backward_triton(grad: torch.Tensor, pyramid: torch.Tensor, masks: torch.Tensor, src: torch.Tensor,
                                 complement: bool, flip: bool, nhwc: bool, out: torch.Tensor) -> None:
    """grad like blend_levels' out; writes out (N, H, W) = d(sum grad * blend)/d masks."""
    _, levels, c, h, w = pyramid.shape
    n = masks.shape[0]
    if n == 0 or h * w == 0:
        return
    block = _block(pyramid.device, h * w)
    _blend_levels_backward_kernel[(n, triton.cdiv(h * w, block))](grad, pyramid, masks, src, out, levels, c, h, w,
                                                                  COMPLEMENT=bool(complement), FLIP=bool(flip),
                                                                  NHWC=bool(nhwc), BLOCK=block)
