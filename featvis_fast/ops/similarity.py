"""`featvis::pixel_similarity` and `featvis::colorize`: the registered ops of the similarity hot path.

Each op takes the backend name as its last argument (resolved by the caller through
featvis_fast._backend) and dispatches to the kernel launcher of that backend. Fake
implementations make both ops traceable by torch.compile; neither is differentiable.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import _reference
from . import _registry
from ._registry import BACKENDS, Kernels

KERNELS = Kernels("similarity", pixel_similarity="similarity_triton", colorize="colorize_triton")


def _similarity_launcher(backend: str):
    def run(features, queries, metric, scales, query_scales):
        dev = features.device
        sim = _registry.empty((queries.shape[0], features.shape[1]), torch.float32, dev)
        minmax = _registry.empty((queries.shape[0], 2), torch.float32, dev)
        KERNELS.module(backend).pixel_similarity(features, queries, metric, scales, query_scales, sim, minmax)
        return sim, minmax
    return run


def _colorize_launcher(backend: str):
    def run(sim, lo, hi, lut):
        out = _registry.empty((*sim.shape, 4), torch.uint8, sim.device)
        KERNELS.module(backend).colorize(sim, lo, hi, lut, out)
        return out
    return run


_SIMILARITY = {"torch": _reference.pixel_similarity, **{b: _similarity_launcher(b) for b in BACKENDS}}
_COLORIZE = {"torch": _reference.colorize, **{b: _colorize_launcher(b) for b in BACKENDS}}


@torch.library.custom_op("featvis::pixel_similarity", mutates_args=())
def pixel_similarity(features: torch.Tensor, queries: torch.Tensor, metric: int, scales: Optional[torch.Tensor],
                     query_scales: Optional[torch.Tensor], backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """features (C, N), queries (Q, C), same dtype -> sim (Q, N) f32, minmax (Q, 2) f32.

    metric: 0 inner product, 1 IFeaLiD angular similarity (unit vectors), 2 euclidean distance.
    int8 storage carries per-pixel scales (N,) and query_scales (Q,) (None for float storage).
    """
    if features.dtype == torch.int8:
        if metric == _reference.EUCLIDEAN:
            raise ValueError("euclidean is not supported with int8 storage")
        if scales is None or query_scales is None:
            raise ValueError("int8 storage needs scales (N,) and query_scales (Q,)")
        scales, query_scales = scales.float().contiguous(), query_scales.float().contiguous()
    elif scales is not None or query_scales is not None:
        raise ValueError(f"scales are only used with int8 storage, not {features.dtype}")
    return _SIMILARITY[backend](features.contiguous(), queries.contiguous(), metric, scales, query_scales)


@pixel_similarity.register_fake
def _(features, queries, metric, scales, query_scales, backend):
    q, n = queries.shape[0], features.shape[1]
    return features.new_empty((q, n), dtype=torch.float32), features.new_empty((q, 2), dtype=torch.float32)


@torch.library.custom_op("featvis::colorize", mutates_args=())
def colorize(sim: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, lut: torch.Tensor,
             backend: str) -> torch.Tensor:
    """sim (Q, N) f32, lo/hi (Q,) f32 stretch range, lut (256, 4) uint8 -> RGBA8 (Q, N, 4)."""
    return _COLORIZE[backend](sim.float().contiguous(), lo.float().contiguous(), hi.float().contiguous(),
                              lut.contiguous())


@colorize.register_fake
def _(sim, lo, hi, lut, backend):
    return sim.new_empty((*sim.shape, 4), dtype=torch.uint8)
