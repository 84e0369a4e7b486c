"""`featvis::pixel_similarity` and `featvis::colorize`: the registered ops of the similarity hot path.

Each op takes the backend name as its last argument (resolved by the caller through
featvis_fast._backend) and dispatches to the kernel launcher of that backend. Fake
implementations make both ops traceable by torch.compile; neither is differentiable.
"""
from __future__ import annotations

import torch

from .. import _extensions, _reference


def _similarity_cpp(features, queries, metric):
    sim = torch.empty((queries.shape[0], features.shape[1]), dtype=torch.float32)
    minmax = torch.empty((queries.shape[0], 2), dtype=torch.float32)
    _extensions.load_cpu().pixel_similarity(features, queries, metric, sim, minmax)
    return sim, minmax


def _similarity_cuda(features, queries, metric):
    dev = features.device
    sim = torch.empty((queries.shape[0], features.shape[1]), dtype=torch.float32, device=dev)
    minmax = torch.empty((queries.shape[0], 2), dtype=torch.float32, device=dev)
    _extensions.load_cuda().pixel_similarity(features, queries, metric, sim, minmax)
    return sim, minmax


def _similarity_triton(features, queries, metric):
    from featvis_fast.kernels.similarity import similarity_triton

    return similarity_triton(features, queries, metric)


def _colorize_compiled(load):
    def run(sim, lo, hi, lut):
        out = torch.empty((*sim.shape, 4), dtype=torch.uint8, device=sim.device)
        load().colorize(sim, lo, hi, lut, out)
        return out
    return run


def _colorize_triton(sim, lo, hi, lut):
    from featvis_fast.kernels.similarity import colorize_triton

    return colorize_triton(sim, lo, hi, lut)


_SIMILARITY = {"torch": _reference.pixel_similarity, "cpp": _similarity_cpp,
               "cuda": _similarity_cuda, "triton": _similarity_triton}
_COLORIZE = {"torch": _reference.colorize, "cpp": _colorize_compiled(_extensions.load_cpu),
             "cuda": _colorize_compiled(_extensions.load_cuda), "triton": _colorize_triton}


@torch.library.custom_op("featvis::pixel_similarity", mutates_args=())
def pixel_similarity(features: torch.Tensor, queries: torch.Tensor, metric: int,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """features (C, N), queries (Q, C), contiguous, same dtype -> sim (Q, N) f32, minmax (Q, 2) f32.

    metric: 0 inner product, 1 IFeaLiD angular similarity (unit vectors), 2 euclidean distance.
    """
    return _SIMILARITY[backend](features, queries, metric)


@pixel_similarity.register_fake
def _(features, queries, metric, backend):
    q, n = queries.shape[0], features.shape[1]
    return features.new_empty((q, n), dtype=torch.float32), features.new_empty((q, 2), dtype=torch.float32)


@torch.library.custom_op("featvis::colorize", mutates_args=())
def colorize(sim: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, lut: torch.Tensor,
             backend: str) -> torch.Tensor:
    """sim (Q, N) f32, lo/hi (Q,) f32 stretch range, lut (256, 4) uint8 -> RGBA8 (Q, N, 4)."""
    return _COLORIZE[backend](sim, lo, hi, lut)


@colorize.register_fake
def _(sim, lo, hi, lut, backend):
    return sim.new_empty((*sim.shape, 4), dtype=torch.uint8)
