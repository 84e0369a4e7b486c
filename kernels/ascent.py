"""Triton kernel of the fused gradient-ascent step `featvis::ascent_step` (semantics:
featvis_fast._ascent_reference; calling convention: featvis_fast.ops.ascent).

`_ascent_kernel` runs one program per ((n, c) plane, block of its pixels): it reads x at the pixel
and the six neighbours the beta-TV gradient needs, the objective gradient of the previous crop
(0 outside it, times scale[n]), the optimizer state, and writes the new image, the new state and
the pixel's place in the next jittered crop (when it falls inside). Regularizers with weight 0,
Adam, Nesterov and clipping are constexpr switches. Powers go through exp2/log2 (libdevice does
not run under the interpreter), with |x| = 0 handled as pow does. Arithmetic is fp32 without FMA
contraction (IEEE division and square root), rounded once on store; bf16 results are rounded to
nearest-even in fp32 bits first (`_round_bf16`: the interpreter's fp32 -> bf16 conversion truncates).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._abi import OPTIMIZER_ADAM, OPTIMIZER_NESTEROV, OPTIMIZER_SGD
from .perturbation import _round_bf16


@triton.jit
def _pow(a, e):
    """a ** e for a >= 0 (NaN passes through), with pow's values at a == 0: 0 (e > 0), 1 (e == 0), inf (e < 0)."""
    pos = a > 0.0
    r = tl.exp2(e * tl.log2(tl.where(pos, a, 1.0)))
    at_zero = tl.where(e > 0.0, 0.0, tl.where(e == 0.0, 1.0, float("inf")))
    return tl.where(a != a, a, tl.where(pos, r, at_zero))


@triton.jit
def _tv_weight(a, b, tv_eps, beta, tv_exp):
    """beta * (a^2 + b^2 + tv_eps) ** (beta / 2 - 1)."""
    return beta * _pow(a * a + b * b + tv_eps, tv_exp)


@triton.jit
def _ascent_kernel(x_ptr, g_ptr, off_ptr, scale_ptr, m_ptr, v_ptr, noff_ptr, out_ptr, m_out_ptr, v_out_ptr, nxt_ptr,
                   C, H, W, gh, gw, ch, cw, lr, momentum, beta1, one_m_beta1, beta2, one_m_beta2, bias1, bias2, eps,
                   l1, l2x2, lpp, lp_exp, tv, beta, tv_eps, tv_exp, clip_lo, clip_hi,
                   ADAM: tl.constexpr, NESTEROV: tl.constexpr, L1: tl.constexpr, L2: tl.constexpr,
                   LP: tl.constexpr, TV: tl.constexpr, CLIP: tl.constexpr, ROUND_BF16: tl.constexpr,
                   BLOCK: tl.constexpr):
    pl = tl.program_id(0).to(tl.int64)  # n * C + c
    n = pl // C
    plane = H * W
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < plane
    i = offs // W
    j = offs % W
    base = pl * plane
    xs = x_ptr + base + offs
    xc = tl.load(xs, mask=inside, other=0.0).to(tl.float32)

    # objective gradient of the previous crop, placed at (dy, dx), times the per-image scale
    dy = tl.load(off_ptr + n * 2)
    dx = tl.load(off_ptr + n * 2 + 1)
    gi = i - dy
    gj = j - dx
    in_g = inside & (gi >= 0) & (gi < gh) & (gj >= 0) & (gj < gw)
    gv = tl.load(g_ptr + pl * (gh * gw) + gi * gw + gj, mask=in_g, other=0.0)
    d = gv * tl.load(scale_ptr + n)

    # regularizer gradient, accumulated in the reference's order
    reg = tl.zeros((BLOCK,), tl.float32)
    sgn = tl.where(xc > 0.0, 1.0, tl.where(xc < 0.0, -1.0, 0.0))
    sgn = tl.where(xc != xc, xc, sgn)
    if L1:
        reg = reg + l1 * sgn
    if L2:
        reg = reg + l2x2 * xc
    if LP:
        reg = reg + lpp * _pow(tl.abs(xc), lp_exp) * sgn
    if TV:
        not_last_row = i < H - 1
        not_last_col = j < W - 1
        has_up = inside & (i > 0)
        has_left = inside & (j > 0)
        x_down = tl.load(xs + W, mask=inside & not_last_row, other=0.0).to(tl.float32)
        x_right = tl.load(xs + 1, mask=inside & not_last_col, other=0.0).to(tl.float32)
        x_up = tl.load(xs - W, mask=has_up, other=0.0).to(tl.float32)
        x_up_right = tl.load(xs - W + 1, mask=has_up & not_last_col, other=0.0).to(tl.float32)
        x_left = tl.load(xs - 1, mask=has_left, other=0.0).to(tl.float32)
        x_down_left = tl.load(xs + W - 1, mask=has_left & not_last_row, other=0.0).to(tl.float32)
        # this pixel's differences
        a = tl.where(not_last_row, x_down - xc, 0.0)
        b = tl.where(not_last_col, x_right - xc, 0.0)
        w = _tv_weight(a, b, tv_eps, beta, tv_exp)
        # the pixel above (its a ends here) and the pixel to the left (its b ends here)
        a_up = xc - x_up
        b_up = tl.where(not_last_col, x_up_right - x_up, 0.0)
        w_up = _tv_weight(a_up, b_up, tv_eps, beta, tv_exp)
        b_left = xc - x_left
        a_left = tl.where(not_last_row, x_down_left - x_left, 0.0)
        w_left = _tv_weight(a_left, b_left, tv_eps, beta, tv_exp)
        tvg = -(w * a + w * b)
        tvg = tvg + tl.where(i > 0, w_up * a_up, 0.0)
        tvg = tvg + tl.where(j > 0, w_left * b_left, 0.0)
        reg = reg + tv * tvg
    d = d - reg

    mv = tl.load(m_ptr + base + offs, mask=inside, other=0.0)
    if ADAM:
        vv = tl.load(v_ptr + base + offs, mask=inside, other=0.0)
        m_new = beta1 * mv + one_m_beta1 * d
        v_new = beta2 * vv + one_m_beta2 * d * d
        step = tl.div_rn(lr * tl.div_rn(m_new, bias1), tl.sqrt_rn(tl.div_rn(v_new, bias2)) + eps)
        tl.store(v_out_ptr + base + offs, v_new, mask=inside)
    else:
        m_new = momentum * mv + d
        if NESTEROV:
            step = lr * (d + momentum * m_new)
        else:
            step = lr * m_new
    tl.store(m_out_ptr + base + offs, m_new, mask=inside)
    xn = xc + step
    if CLIP:
        xn = tl.minimum(tl.maximum(xn, clip_lo), clip_hi)
    if ROUND_BF16:
        xn = _round_bf16(xn)
    xo = xn.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + base + offs, xo, mask=inside)

    # this step's image, cropped at next_offsets
    ny = tl.load(noff_ptr + n * 2)
    nx = tl.load(noff_ptr + n * 2 + 1)
    ci = i - ny
    cj = j - nx
    in_n = inside & (ci >= 0) & (ci < ch) & (cj >= 0) & (cj < cw)
    tl.store(nxt_ptr + pl * (ch * cw) + ci * cw + cj, xo, mask=in_n)


def _block(device: torch.device) -> int:
    return 16384 if device.type == "cpu" else 1024  # interpreter: few large numpy blocks


def ascent_step_triton(x: torch.Tensor, g: torch.Tensor, offsets: torch.Tensor, scale: torch.Tensor,
                       m: torch.Tensor, v: torch.Tensor, next_offsets: torch.Tensor, step: int, lr: float,
                       optimizer_code: int, momentum: float, beta1: float, beta2: float, eps: float, l1: float,
                       l2: float, lp: float, p: float, tv: float, beta: float, tv_eps: float, clip_lo: float,
                       clip_hi: float, out: torch.Tensor, m_out: torch.Tensor, v_out: torch.Tensor,
                       nxt: torch.Tensor) -> None:
    """All contiguous NCHW. x (N, C, H, W) fp32/fp16/bf16; g (N, C, h, w) fp32, the objective gradient
    of the crop at offsets (N, 2) int32 (dy, dx); scale (N,) fp32 multiplies g[n]; m fp32 like x; v fp32
    like x (Adam) or empty (SGD, Nesterov); optimizer_code 0 = SGD, 1 = Adam, 2 = Nesterov. Writes out
    (x's dtype), m_out, v_out (Adam; empty otherwise) and nxt (N, C, crop_h, crop_w) = out cropped at
    next_offsets. Clips to [clip_lo, clip_hi] only when clip_lo <= clip_hi."""
    if optimizer_code not in (OPTIMIZER_SGD, OPTIMIZER_ADAM, OPTIMIZER_NESTEROV):
        raise ValueError(f"optimizer_code must be 0 (SGD), 1 (Adam) or 2 (Nesterov), got {optimizer_code}")
    n, c, h, w = x.shape
    gh, gw = g.shape[-2:]
    ch, cw = nxt.shape[-2:]
    plane = h * w
    if n * c == 0 or plane == 0:
        return
    adam = optimizer_code == OPTIMIZER_ADAM
    # host scalars as the reference forms them (Python doubles, rounded to fp32 at launch)
    bias1 = 1.0 - beta1 ** step if adam else 1.0
    bias2 = 1.0 - beta2 ** step if adam else 1.0
    v_in = v if adam else m
    v_o = v_out if adam else m_out
    block = min(_block(x.device), triton.next_power_of_2(plane))
    _ascent_kernel[(n * c, triton.cdiv(plane, block))](
        x, g, offsets, scale, m, v_in, next_offsets, out, m_out, v_o, nxt,
        c, h, w, gh, gw, ch, cw, float(lr), float(momentum), float(beta1), 1.0 - float(beta1), float(beta2),
        1.0 - float(beta2), float(bias1), float(bias2), float(eps), float(l1), 2.0 * float(l2), float(lp) * float(p),
        float(p) - 1.0, float(tv), float(beta), float(tv_eps), float(beta) / 2.0 - 1.0, float(clip_lo),
        float(clip_hi),
        ADAM=adam, NESTEROV=optimizer_code == OPTIMIZER_NESTEROV, L1=l1 != 0, L2=l2 != 0, LP=lp != 0, TV=tv != 0,
        CLIP=clip_lo <= clip_hi, ROUND_BF16=out.dtype == torch.bfloat16, BLOCK=block, enable_fp_fusion=False)
