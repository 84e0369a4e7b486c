"""PyTorch reference of the LRP hot path's elementwise step (featvis::lrp_ratio): the semantics
every backend computes, the float64 path and the tests' oracle.

Every LRP rule divides the relevance at a layer's output by the layer's (modified) output,
stabilized away from zero as Zennit does (Bach et al. 2015; Montavon et al. 2019):

    s = r / (z + eps * sign(z)),   z = z1 (+ z2),   sign(0) = +1

(z2: the second term of the z-plus / alpha-beta / gamma rules' split forward, a+ W+ + a- W-).
"""
from __future__ import annotations

import torch


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """z + eps * sign(z), with sign(0) = +1 (Zennit's stabilizer; one new tensor, no others)."""
    return torch.where(z < 0, z.new_tensor(-eps), z.new_tensor(eps)).add_(z)


def lrp_ratio(r: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor | None, eps: float) -> torch.Tensor:
    """r / stabilize(z1 + z2, eps) (z2 None: z1 alone); all shaped alike."""
    z = z1 if z2 is None else z1 + z2
    return r / stabilize(z, eps)
