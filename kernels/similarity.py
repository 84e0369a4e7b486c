"""Triton kernels for fused per-pixel feature similarity (IFeaLiD-style heat maps).

Pass 1 (`_similarity_kernel`) reads the (C, N) feature cache once per block of up to 8 queries
and writes the (Q, N) similarity plus per-block min/max partials; pass 2 (`_colorize_kernel`)
maps similarity to RGBA8 through a lookup table, reading only the (Q, N) float32 map.
Semantics are those of featvis_fast._reference (INNER / ANGULAR / EUCLIDEAN, colorize rule).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._abi import METRIC_ANGULAR, METRIC_EUCLIDEAN


@triton.jit
def _acos01(x):
    # acos on [0, 1] by Abramowitz & Stegun 4.4.46 (|err| <= 2e-8): libdevice is unavailable
    # under the interpreter, and this keeps GPU and CPU results identical in form.
    p = -0.0012624911
    p = p * x + 0.0066700901
    p = p * x - 0.0170881256
    p = p * x + 0.0308918810
    p = p * x - 0.0501743046
    p = p * x + 0.0889789874
    p = p * x - 0.2145988016
    p = p * x + 1.5707963050
    return tl.sqrt_rn(1.0 - x) * p


@triton.jit
def _similarity_kernel(f_ptr, q_ptr, scale_ptr, qscale_ptr, sim_ptr, part_ptr, C, N, Q, NUM_N_BLOCKS,
                       ANGULAR: tl.constexpr, EUCLIDEAN: tl.constexpr, INT8: tl.constexpr, BLOCK_Q: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_q = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_n = offs_n < N
    mask_q = offs_q < Q
    acc = tl.zeros((BLOCK_Q, BLOCK_N), dtype=tl.int32 if INT8 else tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        f = tl.load(f_ptr + offs_c.to(tl.int64)[:, None] * N + offs_n[None, :],
                    mask=mask_c[:, None] & mask_n[None, :], other=0)
        q = tl.load(q_ptr + offs_q.to(tl.int64)[:, None] * C + offs_c[None, :],
                    mask=mask_q[:, None] & mask_c[None, :], other=0)
        # int8: exact int32 sums; float storage: float32 accumulation
        f = f.to(tl.int32) if INT8 else f.to(tl.float32)
        q = q.to(tl.int32) if INT8 else q.to(tl.float32)
        if EUCLIDEAN:
            d = f[None, :, :] - q[:, :, None]
            acc += tl.sum(d * d, axis=1)
        else:
            acc += tl.sum(q[:, :, None] * f[None, :, :], axis=1)
    if INT8:  # (float(sum) * scale[n]) * query_scale[q], two roundings in this order
        scale = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0)
        qscale = tl.load(qscale_ptr + offs_q, mask=mask_q, other=0.0)
        acc = (acc.to(tl.float32) * scale[None, :]) * qscale[:, None]
    if ANGULAR:
        x = tl.minimum(tl.maximum(acc, 0.0), 1.0)
        s = 1.0 - _acos01(x) * 0.6366197723675814  # 2/pi
        s = tl.where(x > 0.0, tl.minimum(tl.maximum(s, 0.0), 1.0), 0.0)  # orthogonal/zero vectors: exactly 0
    elif EUCLIDEAN:
        s = tl.sqrt_rn(acc)
    else:
        s = acc
    out_mask = mask_q[:, None] & mask_n[None, :]
    tl.store(sim_ptr + offs_q.to(tl.int64)[:, None] * N + offs_n[None, :], s, mask=out_mask)
    s_min = tl.min(tl.where(mask_n[None, :], s, float("inf")), axis=1)
    s_max = tl.max(tl.where(mask_n[None, :], s, float("-inf")), axis=1)
    part = part_ptr + (offs_q.to(tl.int64) * NUM_N_BLOCKS + pid_n) * 2
    tl.store(part, s_min, mask=mask_q)
    tl.store(part + 1, s_max, mask=mask_q)


@triton.jit
def _colorize_kernel(sim_ptr, lo_ptr, hi_ptr, lut_ptr, out_ptr, N, BLOCK: tl.constexpr):
    pid_n = tl.program_id(0)
    q = tl.program_id(1)
    offs = pid_n * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    row = q.to(tl.int64) * N
    s = tl.load(sim_ptr + row + offs, mask=mask, other=0.0)
    lo = tl.load(lo_ptr + q)
    hi = tl.load(hi_ptr + q)
    span = hi - lo
    scale = tl.where(span > 0, tl.math.div_rn(255.0, tl.where(span > 0, span, 1.0)), 0.0)
    t = (s - lo) * scale + 0.5
    t = tl.where(t == t, t, 0.0)  # NaN -> 0
    t = tl.minimum(tl.maximum(t, 0.0), 255.0)
    color = tl.load(lut_ptr + t.to(tl.int32), mask=mask, other=0)  # one RGBA8 texel as int32
    tl.store(out_ptr + row + offs, color, mask=mask)


def _similarity_blocks(device: torch.device, q: int) -> tuple[int, int, int, int]:
    block_q = min(8, triton.next_power_of_2(q))
    if device.type == "cpu":  # interpreter: few, large numpy blocks are fastest
        return block_q, 64, 1024, 4
    return block_q, max(4, 32 // block_q), 256, 8


def similarity_triton(features: torch.Tensor, queries: torch.Tensor, metric: int, scales: torch.Tensor | None,
                      query_scales: torch.Tensor | None, sim: torch.Tensor, minmax: torch.Tensor) -> None:
    """features (C, N) and queries (Q, C), contiguous, same dtype (int8 with (N,) scales and (Q,)
    query_scales); writes sim (Q, N) and minmax (Q, 2), float32."""
    C, N = features.shape
    Q = queries.shape[0]
    block_q, block_c, block_n, warps = _similarity_blocks(features.device, Q)
    n_blocks = triton.cdiv(N, block_n)
    partials = torch.empty((Q, n_blocks, 2), dtype=torch.float32, device=features.device)
    grid = (n_blocks, triton.cdiv(Q, block_q))
    int8 = features.dtype == torch.int8
    _similarity_kernel[grid](features, queries, scales if int8 else sim, query_scales if int8 else sim,
                             sim, partials, C, N, Q, n_blocks, ANGULAR=metric == METRIC_ANGULAR,
                             EUCLIDEAN=metric == METRIC_EUCLIDEAN, INT8=int8,
                             BLOCK_Q=block_q, BLOCK_C=block_c, BLOCK_N=block_n, num_warps=warps,
                             enable_fp_fusion=False)
    torch.amin(partials[:, :, 0], dim=1, out=minmax[:, 0])
    torch.amax(partials[:, :, 1], dim=1, out=minmax[:, 1])


def colorize_triton(sim: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, lut: torch.Tensor,
                    out: torch.Tensor) -> None:
    """sim (Q, N) f32, lo/hi (Q,) f32, lut (256, 4) uint8; writes RGBA8 into out (Q, N, 4) uint8."""
    Q, N = sim.shape
    block = 4096 if sim.device.type == "cpu" else 1024
    grid = (triton.cdiv(N, block), Q)
    _colorize_kernel[grid](sim, lo, hi, lut.view(torch.int32).reshape(256), out.view(torch.int32),
                           N, BLOCK=block, enable_fp_fusion=False)

