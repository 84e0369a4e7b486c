"""`featvis::dissect_tally`: the fused tally of Network Dissection (Bau et al. 2017); semantics:
featvis_fast._dissection_reference.

dissect_tally(acts, thresholds, labels, annotated, backend) -> (intersection, unit_area, label_area)
    acts (B, U, h, w) float32 (float16 / bfloat16 are widened exactly; float64 runs the reference),
    thresholds (U,) float64 (any float dtype, widened), labels (B, K, H, W) bool (or uint8: nonzero = in
    the concept), annotated (B, K) bool (or uint8). Outputs: exact int64 counts, intersection and unit_area
    (U, K), label_area (K,), summed over the images where concept k is annotated.

Every kernel backend upsamples each activation map bilinearly in float64 (PyTorch's align_corners=False
rule, in the reference's order of operations, no FMA contraction), thresholds it and intersects it with
the bit-packed labels on the fly: the (B, U, H, W) upsampled tensor is never built. Backends: C++ CPU,
Triton, CUDA, the PyTorch reference (`torch`). Not differentiable (counts).
"""
from __future__ import annotations

import torch

from .. import _dissection_reference as ref
from . import _registry
from ._registry import BACKENDS, Kernels

ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MASK_DTYPES = (torch.bool, torch.uint8)


KERNELS = Kernels("dissection", dissect_tally="dissect_tally_triton")


def _check(acts: torch.Tensor, thresholds: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor,
           backend: str) -> None:
    if backend != "torch" and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('torch', *BACKENDS)}, got {backend!r}")
    if acts.dim() != 4 or acts.dtype not in ACT_DTYPES:
        raise ValueError(f"acts must be (B, U, h, w) float32, float16, bfloat16 or float64, "
                         f"got {acts.dtype} {tuple(acts.shape)}")
    b, u, h, w = acts.shape
    if h < 1 or w < 1:
        raise ValueError(f"acts maps must be at least 1x1, got {h}x{w}")
    if thresholds.dim() != 1 or thresholds.shape[0] != u or not thresholds.dtype.is_floating_point:
        raise ValueError(f"thresholds must be ({u},) float64, one per unit of acts {tuple(acts.shape)}, "
                         f"got {thresholds.dtype} {tuple(thresholds.shape)}")
    if labels.dim() != 4 or labels.dtype not in MASK_DTYPES:
        raise ValueError(f"labels must be (B, K, H, W) bool or uint8, got {labels.dtype} {tuple(labels.shape)}")
    if labels.shape[0] != b:
        raise ValueError(f"labels hold {labels.shape[0]} images but acts hold {b}")
    if labels.shape[2] < 1 or labels.shape[3] < 1:
        raise ValueError(f"label maps must be at least 1x1, got {labels.shape[2]}x{labels.shape[3]}")
    if annotated.shape != labels.shape[:2] or annotated.dtype not in MASK_DTYPES:
        raise ValueError(f"annotated must be (B, K) = {tuple(labels.shape[:2])} bool or uint8 like labels "
                         f"{tuple(labels.shape)}, got {annotated.dtype} {tuple(annotated.shape)}")
    for name, t in (("thresholds", thresholds), ("labels", labels), ("annotated", annotated)):
        if t.device != acts.device:
            raise ValueError(f"{name} must be on acts' device {acts.device}, got {t.device}")


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8 view (bool is one byte: 0 or 1)."""
    t = t.contiguous()
    return t.view(torch.uint8) if t.dtype == torch.bool else t


@torch.library.custom_op("featvis::dissect_tally", mutates_args=())
def dissect_tally(acts: torch.Tensor, thresholds: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor,
                  backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """acts (B, U, h, w), thresholds (U,), labels (B, K, H, W) bool, annotated (B, K) bool ->
    (intersection (U, K), unit_area (U, K), label_area (K,)) int64."""
    _check(acts, thresholds, labels, annotated, backend)
    module = KERNELS.for_call(backend, acts.dtype)
    if module is None:
        return ref.dissect_tally(acts, thresholds, labels.bool(), annotated.bool())
    u, k = acts.shape[1], labels.shape[1]
    dev = acts.device
    intersection = _registry.empty((u, k), torch.int64, dev)
    unit_area = _registry.empty((u, k), torch.int64, dev)
    label_area = _registry.empty((k,), torch.int64, dev)
    module.dissect_tally(acts.float().contiguous(), thresholds.double().contiguous(), _as_bytes(labels),
                         _as_bytes(annotated), intersection, unit_area, label_area)
    return intersection, unit_area, label_area


@dissect_tally.register_fake
def _(acts, thresholds, labels, annotated, backend):
    u, k = acts.shape[1], labels.shape[1]
    return (acts.new_empty((u, k), dtype=torch.int64), acts.new_empty((u, k), dtype=torch.int64),
            acts.new_empty((k,), dtype=torch.int64))
