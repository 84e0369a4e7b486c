"""Plain PyTorch reference of every kernel: the `torch` backend, the test oracle (run it in
float64) and the benchmark baseline. Semantics here define what every backend must compute."""
from __future__ import annotations

import math

import torch

from ._abi import METRIC_ANGULAR as ANGULAR
from ._abi import METRIC_EUCLIDEAN as EUCLIDEAN
from ._abi import METRIC_INNER as INNER

KERNEL_METRICS = (INNER, ANGULAR, EUCLIDEAN)


def pixel_similarity(features: torch.Tensor, queries: torch.Tensor, metric: int,
                     scales: torch.Tensor | None = None, query_scales: torch.Tensor | None = None,
                     compute_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of every pixel to every query vector, and its per-query min/max.

    features: (C, N) prepared feature cache; queries: (Q, C) in the same storage dtype.
    metric INNER: s = <f_n, q>; ANGULAR (IFeaLiD, on unit vectors):
    s = clamp(1 - acos(clamp(<f_n, q>, 0, 1)) / (pi/2), 0, 1), exactly 0 where <f_n, q> <= 0; EUCLIDEAN:
    s = ||f_n - q||_2. int8 storage (INNER/ANGULAR only) carries per-pixel scales (N,) and
    query_scales (Q,): <f_n, q> = (float32(exact integer sum) * scales[n]) * query_scales[q].
    Returns sim (Q, N) and minmax (Q, 2), float32 (float64 when compute_dtype is, for the oracle).
    """
    if features.dtype == torch.int8:
        if metric == EUCLIDEAN:
            raise ValueError("euclidean is not supported with int8 storage")
        exact = queries.double() @ features.double()   # integer sums, exact in float64
        if compute_dtype == torch.float64:
            sim = exact * scales.double() * query_scales.double()[:, None]
        else:
            sim = exact.float() * scales.float() * query_scales.float()[:, None]
        if metric == ANGULAR:
            sim = (1.0 - torch.acos(sim.clamp(0.0, 1.0)) * (2.0 / math.pi)).clamp(0.0, 1.0)
    else:
        f = features.to(compute_dtype)
        q = queries.to(compute_dtype)
        if metric == EUCLIDEAN:
            # Direct differences, not the |a|^2+|b|^2-2ab expansion, which cancels for close vectors.
            sim = torch.cdist(q, f.t(), compute_mode="donot_use_mm_for_euclid_dist")
        else:
            sim = q @ f
            if metric == ANGULAR:
                sim = (1.0 - torch.acos(sim.clamp(0.0, 1.0)) * (2.0 / math.pi)).clamp(0.0, 1.0)
            elif metric != INNER:
                raise ValueError(f"unknown kernel metric code {metric}")
    out_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    sim = sim.to(out_dtype)
    lo, hi = torch.aminmax(sim, dim=1)
    return sim, torch.stack([lo, hi], dim=1)


def colorize(sim: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map similarities to RGBA8 through a 256-entry lookup table with a per-query linear stretch.

    sim (Q, N) float32, lo/hi (Q,) float32, lut (256, 4) uint8 -> (Q, N, 4) uint8.
    idx = trunc(clamp((s - lo) * 255/(hi - lo) + 0.5, 0, 255)); hi <= lo maps everything to 0;
    NaN maps to 0. Every backend computes exactly this in float32.
    """
    sim = sim.float()
    lo = lo.float()[:, None]
    hi = hi.float()[:, None]
    span = hi - lo
    # a true division: torch computes `255.0 / span` as 255 * reciprocal(span), which rounds differently
    scale = torch.where(span > 0, torch.full_like(span, 255.0) / span, torch.zeros_like(span))
    t = (sim - lo) * scale + 0.5
    t = torch.nan_to_num(t, nan=0.0).clamp(0.0, 255.0)
    return lut[t.to(torch.int64)]
