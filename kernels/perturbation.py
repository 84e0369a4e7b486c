"""Triton kernels for the perturbation ops (semantics: featvis_fast._perturbation_reference).

`_occlude_kernel` and `_apply_masks_kernel` run one program per (perturbed copy n, block of its
elements in memory order, NCHW or NHWC) and write every element of out[n]; `_box_accumulate_kernel`
gathers: each output element walks the N boxes in index order (deterministic, no atomics);
`_rise_masks_kernel` samples the bilinear upsampling (PyTorch's align_corners=False rule) at the
shifted pixel. Arithmetic is fp32 without FMA contraction, rounded once on store. bf16 results are
rounded to nearest-even in fp32 bits before the store (`_round_bf16`): the interpreter's fp32 ->
bf16 conversion truncates; on a GPU the pre-rounded value converts exactly.
"""
from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl


@triton.jit
def _round_bf16(v):
    """fp32 -> the nearest bf16 value (ties to even), still fp32; NaN passes through."""
    u = v.to(tl.int32, bitcast=True)
    r = (u + (0x7FFF + ((u >> 16) & 1))) & -65536  # -65536 == 0xFFFF0000
    return tl.where(v != v, v, r.to(tl.float32, bitcast=True))


@triton.jit
def _pixel_coords(offs, C, W, plane, NHWC: tl.constexpr):
    """(c, y, x) of element offsets within one image stored NCHW or NHWC (plane = H * W)."""
    if NHWC:
        c = offs % C
        pix = offs // C
    else:
        c = offs // plane
        pix = offs % plane
    return c, pix // W, pix % W


@triton.jit
def _occlude_kernel(x_ptr, fill_ptr, src_ptr, boxes_ptr, out_ptr, C, W, plane, size, NHWC: tl.constexpr,
                    BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < size
    c, y, x = _pixel_coords(offs, C, W, plane, NHWC)
    box = boxes_ptr + n * 6
    y0 = tl.load(box)
    y1 = tl.load(box + 1)
    x0 = tl.load(box + 2)
    x1 = tl.load(box + 3)
    c0 = tl.load(box + 4)
    c1 = tl.load(box + 5)
    in_box = (y >= y0) & (y < y1) & (x >= x0) & (x < x1) & (c >= c0) & (c < c1)
    base = tl.load(src_ptr + n).to(tl.int64) * size
    xv = tl.load(x_ptr + base + offs, mask=inside & ~in_box)
    fv = tl.load(fill_ptr + base + offs, mask=inside & in_box)
    tl.store(out_ptr + n * size + offs, tl.where(in_box, fv, xv), mask=inside)


@triton.jit
def _apply_masks_kernel(x_ptr, fill_ptr, masks_ptr, src_ptr, out_ptr, C, plane, size, NHWC: tl.constexpr,
                        ROUND_BF16: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < size
    if NHWC:
        pix = offs // C
    else:
        pix = offs % plane
    m = tl.load(masks_ptr + n * plane + pix, mask=inside, other=0.0)
    base = tl.load(src_ptr + n).to(tl.int64) * size
    xv = tl.load(x_ptr + base + offs, mask=inside, other=0.0).to(tl.float32)
    fv = tl.load(fill_ptr + base + offs, mask=inside, other=0.0).to(tl.float32)
    v = xv * m + fv * (1.0 - m)
    if ROUND_BF16:
        v = _round_bf16(v)
    tl.store(out_ptr + n * size + offs, v.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _box_accumulate_kernel(values_ptr, src_ptr, boxes_ptr, sums_ptr, counts_ptr, N, total, P, W, plane,
                           BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    pix = offs % plane
    x = pix % W
    y = pix // W
    p = (offs // plane) % P
    b = offs // plane // P
    acc = tl.zeros((BLOCK,), tl.float32)
    cnt = tl.zeros((BLOCK,), tl.float32)
    for n in range(0, N):
        box = boxes_ptr + n * 6
        y0 = tl.load(box)
        y1 = tl.load(box + 1)
        x0 = tl.load(box + 2)
        x1 = tl.load(box + 3)
        c0 = tl.load(box + 4)
        c1 = tl.load(box + 5)
        s = tl.load(src_ptr + n)
        v = tl.load(values_ptr + n)
        hit = (b == s) & (y >= y0) & (y < y1) & (x >= x0) & (x < x1) & (p >= c0) & (p < c1)
        acc += tl.where(hit, v, 0.0)
        cnt += tl.where(hit, 1.0, 0.0)
    tl.store(sums_ptr + offs, acc, mask=inside)
    tl.store(counts_ptr + offs, cnt, mask=inside)


@triton.jit
def _rise_masks_kernel(grid_ptr, shifts_ptr, masks_ptr, GH, GW, W, plane, scale_h, scale_w, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < plane
    dy = tl.load(shifts_ptr + n * 2)
    dx = tl.load(shifts_ptr + n * 2 + 1)
    i = (offs // W).to(tl.int32) + dy
    j = (offs % W).to(tl.int32) + dx
    # PyTorch's area_pixel_compute_source_index (align_corners=False), all fp32
    rh = tl.maximum(scale_h * (i.to(tl.float32) + 0.5) - 0.5, 0.0)
    rw = tl.maximum(scale_w * (j.to(tl.float32) + 0.5) - 0.5, 0.0)
    h0 = rh.to(tl.int32)  # floor: rh >= 0
    w0 = rw.to(tl.int32)
    h1 = h0 + (h0 < GH - 1).to(tl.int32)
    w1 = w0 + (w0 < GW - 1).to(tl.int32)
    lh1 = rh - h0.to(tl.float32)
    lw1 = rw - w0.to(tl.float32)
    lh0 = 1.0 - lh1
    lw0 = 1.0 - lw1
    g = grid_ptr + n * GH * GW
    g00 = tl.load(g + h0 * GW + w0, mask=inside, other=0.0)
    g01 = tl.load(g + h0 * GW + w1, mask=inside, other=0.0)
    g10 = tl.load(g + h1 * GW + w0, mask=inside, other=0.0)
    g11 = tl.load(g + h1 * GW + w1, mask=inside, other=0.0)
    v = lh0 * (lw0 * g00 + lw1 * g01) + lh1 * (lw0 * g10 + lw1 * g11)
    tl.store(masks_ptr + n * plane + offs, v, mask=inside)


def _fp32(v: float) -> float:
    """v rounded to fp32 (a quotient of two ints < 2^24 rounded via double equals the fp32 quotient)."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _block(device: torch.device) -> int:
    return 16384 if device.type == "cpu" else 1024  # interpreter: few large numpy blocks


def _dims(x: torch.Tensor, nhwc: bool) -> tuple[int, int, int]:
    if nhwc:
        _, h, w, c = x.shape
    else:
        _, c, h, w = x.shape
    return c, h, w


def occlude_triton(x: torch.Tensor, fill: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor, nhwc: bool,
                   out: torch.Tensor) -> None:
    """x, fill contiguous (B, C, H, W) ((B, H, W, C) when nhwc); src (N,) int32; boxes (N, 6) int32;
    writes out (N, trailing dims of x): x[src[n]] with fill[src[n]] inside boxes[n]."""
    n = src.numel()
    c, h, w = _dims(x, nhwc)
    size = c * h * w
    if n == 0 or size == 0:
        return
    block = min(_block(x.device), triton.next_power_of_2(size))
    _occlude_kernel[(n, triton.cdiv(size, block))](x, fill, src, boxes, out, c, w, h * w, size, NHWC=bool(nhwc),
                                                   BLOCK=block)


def apply_masks_triton(x: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor, src: torch.Tensor, nhwc: bool,
                       out: torch.Tensor) -> None:
    """out[n] = x[src[n]] * masks[n] + fill[src[n]] * (1 - masks[n]), fp32 arithmetic rounded once."""
    n = src.numel()
    c, h, w = _dims(x, nhwc)
    size = c * h * w
    if n == 0 or size == 0:
        return
    block = min(_block(x.device), triton.next_power_of_2(size))
    _apply_masks_kernel[(n, triton.cdiv(size, block))](x, fill, masks, src, out, c, h * w, size, NHWC=bool(nhwc),
                                                       ROUND_BF16=out.dtype == torch.bfloat16, BLOCK=block,
                                                       enable_fp_fusion=False)


def box_accumulate_triton(values: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor, sums: torch.Tensor,
                          counts: torch.Tensor) -> None:
    """values (N,) fp32, src (N,) int32, boxes (N, 6) int32; writes sums, counts (B, P, H, W) fp32."""
    total = sums.numel()
    if total == 0:
        return
    _, p, h, w = sums.shape
    block = min(_block(sums.device), triton.next_power_of_2(total))
    _box_accumulate_kernel[(triton.cdiv(total, block),)](values, src, boxes, sums, counts, values.numel(), total,
                                                         p, w, h * w, BLOCK=block)


def rise_masks_triton(grid: torch.Tensor, shifts: torch.Tensor, up_h: int, up_w: int, masks: torch.Tensor) -> None:
    """grid (N, s_h, s_w) fp32, shifts (N, 2) int32; writes masks (N, H, W) fp32 sampled from the
    (up_h, up_w) bilinear upsampling of grid[n] at (i + dy, j + dx)."""
    n, gh, gw = grid.shape
    _, h, w = masks.shape
    if n == 0 or h * w == 0:
        return
    # the scales exactly as PyTorch computes them: float(in) / out in fp32
    scale_h, scale_w = _fp32(gh / up_h), _fp32(gw / up_w)
    block = min(_block(grid.device), triton.next_power_of_2(h * w))
    _rise_masks_kernel[(n, triton.cdiv(h * w, block))](grid, shifts, masks, gh, gw, w, h * w, scale_h, scale_w,
                                                       BLOCK=block, enable_fp_fusion=False)
