"""Triton kernel for the patch op of exact incremental occlusion (semantics:
featvis_fast._patches_reference).

`_gather_patches_kernel` runs one program per block of output elements (all windows' tiles, in
memory order, NCHW or NHWC), works out per element its window n, tile position (c, i, j) and map
position (y, x), and copies the patch element, the base element or the pad. The copy moves raw
16- or 32-bit words (the launcher views the float tensors as ints and passes pad's bits), so it
is exact whatever the dtype, also under the interpreter (which truncates fp32 -> bf16 casts).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_WORDS = {2: torch.int16, 4: torch.int32}  # element size -> the int dtype moved in its place


@triton.jit
def _gather_patches_kernel(base_ptr, src_ptr, corners_ptr, patches_ptr, out_ptr, pad, total, size, C, H, W, PH, PW,
                           TH, TW, NHWC: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = e < total
    n = e // size  # the window
    off = e % size  # offset in its tile, memory order
    if NHWC:
        c = off % C
        pix = off // C
    else:
        c = off // (TH * TW)
        pix = off % (TH * TW)
    i = pix // TW
    j = pix % TW
    corner = corners_ptr + n * 4
    y = tl.load(corner, mask=live, other=0).to(tl.int64) + i
    x = tl.load(corner + 1, mask=live, other=0).to(tl.int64) + j
    ry = y - tl.load(corner + 2, mask=live, other=0).to(tl.int64)
    rx = x - tl.load(corner + 3, mask=live, other=0).to(tl.int64)
    in_patch = (ry >= 0) & (ry < PH) & (rx >= 0) & (rx < PW)
    in_map = (y >= 0) & (y < H) & (x >= 0) & (x < W)
    b = tl.load(src_ptr + n, mask=live, other=0).to(tl.int64)
    if NHWC:
        b_off = ((b * H + y) * W + x) * C + c
        p_off = ((n * PH + ry) * PW + rx) * C + c
    else:
        b_off = ((b * C + c) * H + y) * W + x
        p_off = ((n * C + c) * PH + ry) * PW + rx
    bv = tl.load(base_ptr + b_off, mask=live & in_map & ~in_patch, other=pad)
    pv = tl.load(patches_ptr + p_off, mask=live & in_patch, other=pad)
    tl.store(out_ptr + e, tl.where(in_patch, pv, bv), mask=live)


def _block(device: torch.device) -> int:
    return 16384 if device.type == "cpu" else 1024  # interpreter: few large numpy blocks


def gather_patches_triton(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, patches: torch.Tensor,
                          pad: float, nhwc: bool, out: torch.Tensor) -> None:
    """base contiguous (B, C, H, W) ((B, H, W, C) when nhwc), f32/f16/bf16; src (N,) int32; corners
    (N, 4) int32 (tile_y, tile_x, patch_y, patch_x); patches contiguous (N, C, ph, pw) ((N, ph, pw,
    C) when nhwc) of base's dtype; pad exactly representable in that dtype; writes every element of
    out (N, C, tile_h, tile_w) ((N, tile_h, tile_w, C) when nhwc). src and the patch boxes are not
    range-checked here (the op layer validates them)."""
    if nhwc:
        _, h, w, c = base.shape
        n, ph, pw, _ = patches.shape
        _, th, tw, _ = out.shape
    else:
        _, c, h, w = base.shape
        n, _, ph, pw = patches.shape
        _, _, th, tw = out.shape
    size = c * th * tw
    total = n * size
    if total == 0:
        return
    word = _WORDS[base.element_size()]
    pad_bits = int(torch.tensor(pad, dtype=base.dtype).view(word).item())
    block = min(_block(base.device), triton.next_power_of_2(total))
    _gather_patches_kernel[(triton.cdiv(total, block),)](
        base.view(word), src, corners, patches.view(word), out.view(word), pad_bits, total, size, c, h, w, ph, pw,
        th, tw, NHWC=bool(nhwc), BLOCK=block)
