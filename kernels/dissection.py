"""Triton kernel of the Network Dissection tally `featvis::dissect_tally` (semantics:
featvis_fast._dissection_reference; calling convention: featvis_fast.ops.dissection).

`_tally_kernel` runs one program per (image b, block of label pixels, block of units): it upsamples the
units' activation maps at its pixels bilinearly in float64 (the reference's source taps and weights,
computed on the host by the reference's own source_index(), rows first, no FMA contraction), thresholds
them into a (BLOCK_U, BLOCK_P) mask tile and, for every concept annotated in image b, adds the tile's
per-unit counts of mask & label and of mask to intersection / unit_area with int64 atomics (integers:
the sums are exact in any order; tiles with an empty mask skip the concept loop). The unit-block-0
programs add the label counts to label_area (one unit block runs when U == 0). The upsampled maps exist
only as the tile in registers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from featvis_fast import _dissection_reference as ref


@triton.jit
def _tally_kernel(acts_ptr, thr_ptr, labels_ptr, ann_ptr, y0_ptr, y1_ptr, wy0_ptr, wy1_ptr, x0_ptr, x1_ptr,
                  wx0_ptr, wx1_ptr, inter_ptr, uarea_ptr, larea_ptr, U, K, src_w, src_plane, W, HW,
                  BLOCK_U: tl.constexpr, BLOCK_P: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid_u = tl.program_id(2)
    offs_p = tl.program_id(1).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    live_p = offs_p < HW
    row = offs_p // W
    col = offs_p % W
    y0 = tl.load(y0_ptr + row, mask=live_p, other=0)
    y1 = tl.load(y1_ptr + row, mask=live_p, other=0)
    wy0 = tl.load(wy0_ptr + row, mask=live_p, other=0.0)[None, :]
    wy1 = tl.load(wy1_ptr + row, mask=live_p, other=0.0)[None, :]
    x0 = tl.load(x0_ptr + col, mask=live_p, other=0)
    x1 = tl.load(x1_ptr + col, mask=live_p, other=0)
    wx0 = tl.load(wx0_ptr + col, mask=live_p, other=0.0)[None, :]
    wx1 = tl.load(wx1_ptr + col, mask=live_p, other=0.0)[None, :]

    offs_u = pid_u.to(tl.int64) * BLOCK_U + tl.arange(0, BLOCK_U)
    live_u = offs_u < U
    live = live_u[:, None] & live_p[None, :]
    src = acts_ptr + ((b * U + offs_u) * src_plane)[:, None]
    a00 = tl.load(src + (y0 * src_w + x0)[None, :], mask=live, other=0.0).to(tl.float64)
    a01 = tl.load(src + (y0 * src_w + x1)[None, :], mask=live, other=0.0).to(tl.float64)
    a10 = tl.load(src + (y1 * src_w + x0)[None, :], mask=live, other=0.0).to(tl.float64)
    a11 = tl.load(src + (y1 * src_w + x1)[None, :], mask=live, other=0.0).to(tl.float64)
    # the reference's rows = a[y0] (1 - wy) + a[y1] wy, then up = rows[x0] (1 - wx) + rows[x1] wx
    r0 = a00 * wy0 + a10 * wy1
    r1 = a01 * wy0 + a11 * wy1
    up = r0 * wx0 + r1 * wx1
    thr = tl.load(thr_ptr + offs_u, mask=live_u, other=0.0)
    m = (up > thr[:, None]) & live
    count = tl.sum(m.to(tl.int32), axis=1).to(tl.int64)

    # an empty tile adds nothing to intersection / unit_area (only unit-block-0 programs count labels)
    if (tl.sum(count, axis=0) > 0) | (pid_u == 0):
        for k in range(0, K):
            if tl.load(ann_ptr + b * K + k) != 0:
                lab = tl.load(labels_ptr + (b * K + k) * HW + offs_p, mask=live_p, other=0) != 0
                both = tl.sum((m & lab[None, :]).to(tl.int32), axis=1).to(tl.int64)
                # zero counts (most of them, for masks over a top quantile) add nothing: no atomic
                tl.atomic_add(inter_ptr + offs_u * K + k, both, mask=live_u & (both != 0), sem="relaxed")
                tl.atomic_add(uarea_ptr + offs_u * K + k, count, mask=live_u & (count != 0), sem="relaxed")
                if pid_u == 0:
                    tl.atomic_add(larea_ptr + k, tl.sum(lab.to(tl.int32), axis=0).to(tl.int64), sem="relaxed")


def _taps(out_size: int, in_size: int, device: torch.device):
    """The reference's (i0, i1, 1 - w1, w1) of one axis: int32 taps, float64 weights."""
    i0, i1, w1 = ref.source_index(out_size, in_size, device)
    return i0.to(torch.int32), i1.to(torch.int32), (1 - w1).contiguous(), w1.contiguous()


def dissect_tally_triton(acts: torch.Tensor, thresholds: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor,
                         intersection: torch.Tensor, unit_area: torch.Tensor, label_area: torch.Tensor) -> None:
    """acts (B, U, h, w) fp32, thresholds (U,) fp64, labels (B, K, H, W) uint8, annotated (B, K) uint8, all
    contiguous; writes intersection, unit_area (U, K) and label_area (K,) int64 (zeroed here first)."""
    b, u, h, w = acts.shape
    k, height, width = labels.shape[1:]
    intersection.zero_()
    unit_area.zero_()
    label_area.zero_()
    hw = height * width
    if b == 0 or k == 0 or hw == 0:
        return
    y0, y1, wy0, wy1 = _taps(height, h, acts.device)
    x0, x1, wx0, wx1 = _taps(width, w, acts.device)
    if acts.device.type == "cpu":  # the interpreter: few large numpy blocks
        block_u = min(16, triton.next_power_of_2(max(u, 1)))
        block_p = min(4096, triton.next_power_of_2(hw))
    else:
        block_u = min(16, triton.next_power_of_2(max(u, 1)))
        block_p = min(256, triton.next_power_of_2(hw))
    grid = (b, triton.cdiv(hw, block_p), max(1, triton.cdiv(u, block_u)))
    _tally_kernel[grid](acts, thresholds, labels, annotated, y0, y1, wy0, wy1, x0, x1, wx0, wx1, intersection,
                        unit_area, label_area, u, k, w, h * w, width, hw, BLOCK_U=block_u, BLOCK_P=block_p,
                        enable_fp_fusion=False)
