"""Triton kernel of featvis::lrp_ratio (semantics: featvis_fast._lrp_reference): one program per
block of elements in memory order, s = r / (z + eps * sign(z)), z = z1 (+ z2), sign(0) = +1,
rounded after each operation as the reference is (no FMA contraction)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _lrp_ratio_kernel(r, z1, z2, out, n, eps, HAS_Z2: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    z = tl.load(z1 + offs, mask=live, other=1.0)
    if HAS_Z2:
        z = z + tl.load(z2 + offs, mask=live, other=0.0)
    z = z + tl.where(z < 0, -eps, eps)
    tl.store(out + offs, tl.load(r + offs, mask=live, other=0.0) / z, mask=live)


def lrp_ratio_triton(r: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor | None, eps: float,
                     out: torch.Tensor) -> None:
    """r, z1, z2 (or None), out: float32, contiguous, one shape; writes out."""
    n = r.numel()
    if n == 0:
        return
    block = min(16384 if r.device.type == "cpu" else 1024, triton.next_power_of_2(n))
    _lrp_ratio_kernel[(triton.cdiv(n, block),)](r, z1, z1 if z2 is None else z2, out, n, eps, HAS_Z2=z2 is not None,
                                                BLOCK=block, enable_fp_fusion=False)
