"""Triton kernels for the rectifier rules (semantics: featvis_fast._rectifier_reference).

`_rectify_kernel` writes y = rectifier(x) and packs the pass-through mask into int32 words (32
elements per word, LSB first) by summing the disjoint bits of each row of a (BLOCK/32, 32) view (int32 sums wrap, so
bit 31 works);
`_rectify_backward_kernel` reads the incoming gradient and one word per 32 elements and applies
the rule in the same pass. Arithmetic is fp32, rounded once on store, without FMA contraction.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._abi import RULE_BACKPROP, RULE_DECONVNET


@triton.jit
def _rectify_kernel(x_ptr, y_ptr, packed_ptr, n, lo, hi, slope, LEAKY: tl.constexpr, SAVE: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    v = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    if LEAKY:
        y = tl.where(v > lo, v, v * slope)
    else:
        y = tl.where(v <= lo, lo, tl.where(v >= hi, hi, v))  # NaN fails both tests and passes
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=inside)
    if SAVE:
        passes = (v > lo) & (v < hi) & inside
        bits = passes.to(tl.int32) << (tl.arange(0, BLOCK) % 32).to(tl.int32)
        words = tl.sum(tl.reshape(bits, (BLOCK // 32, 32)), axis=1)  # disjoint bits: sum == or
        w_offs = pid.to(tl.int64) * (BLOCK // 32) + tl.arange(0, BLOCK // 32)
        tl.store(packed_ptr + w_offs, words, mask=w_offs * 32 < n)


@triton.jit
def _rectify_backward_kernel(g_ptr, packed_ptr, dx_ptr, n, slope, MASK: tl.constexpr, SIGN: tl.constexpr,
                             BLOCK: tl.constexpr):
    # MASK: the forward mask gates (backprop, guided); SIGN: the gradient's sign gates (DeconvNet, guided)
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    factor = tl.full((BLOCK,), 1.0, tl.float32)
    if MASK:
        word = tl.load(packed_ptr + offs // 32, mask=inside, other=0)
        bit = (word >> (offs % 32).to(tl.int32)) & 1
        factor = tl.where(bit != 0, 1.0, slope)
    if SIGN:
        factor = factor * tl.where(g > 0.0, 1.0, slope)
    tl.store(dx_ptr + offs, (g * factor).to(dx_ptr.dtype.element_ty), mask=inside)


def _block(device: torch.device) -> int:
    return 16384 if device.type == "cpu" else 1024  # interpreter: few large numpy blocks


def rectify_triton(x: torch.Tensor, lo: float, hi: float, slope: float, y: torch.Tensor,
                   packed: torch.Tensor) -> None:
    """x contiguous (n elements, fp32/fp16/bf16); writes y (may be x) and, when packed has
    ceil(n/32) int32 words, the mask (packed of size 0 saves none)."""
    n = x.numel()
    if n == 0:
        return
    block = _block(x.device)
    save = packed.numel() > 0
    _rectify_kernel[(triton.cdiv(n, block),)](x, y, packed if save else y, n, lo, hi, slope,
                                              LEAKY=slope != 0.0, SAVE=save, BLOCK=block, enable_fp_fusion=False)


def rectify_backward_triton(grad: torch.Tensor, packed: torch.Tensor, rule: int, slope: float,
                            dx: torch.Tensor) -> None:
    """grad contiguous (n elements), packed (ceil(n/32),) int32 (unused for DeconvNet); writes dx."""
    n = grad.numel()
    if n == 0:
        return
    block = _block(grad.device)
    _rectify_backward_kernel[(triton.cdiv(n, block),)](grad, packed if rule != RULE_DECONVNET else grad, dx, n, slope,
                                                       MASK=rule != RULE_DECONVNET, SIGN=rule != RULE_BACKPROP,
                                                       BLOCK=block, enable_fp_fusion=False)
