"""`featvis::lrp_ratio`: the registered op of the LRP rules' elementwise step (semantics:
featvis_fast._lrp_reference), s = r / stabilize(z1 + z2, eps) in one pass instead of five
(a sum, a comparison, a select, an add and a division, each over an activation-sized tensor).

float32 tensors of one shape and one dense layout (contiguous or channels-last) run the kernels,
elementwise over memory; anything else (float64, half precision, mixed layouts) the reference.
The kernels round like the reference, operation by operation, so float32 results are the same
bits. Not differentiable (the rules call it inside their backward).
"""
from __future__ import annotations

import torch

from .. import _lrp_reference as ref
from . import _registry
from ._layout import channels_last as _channels_last
from ._layout import logical as _logical
from ._layout import memory_order as _memory_order
from ._registry import Kernels

KERNELS = Kernels("lrp", lrp_ratio="lrp_ratio_triton")


def _dense_alike(r: torch.Tensor, *others: torch.Tensor) -> bool:
    """r contiguous or channels-last, and the others laid out, typed and placed as r."""
    return (r.is_contiguous() or _channels_last(r)) and all(
        o.stride() == r.stride() and o.dtype == r.dtype and o.device == r.device for o in others)


@torch.library.custom_op("featvis::lrp_ratio", mutates_args=())
def lrp_ratio(r: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor | None, eps: float, backend: str) -> torch.Tensor:
    """r, z1, z2 (optional) of one shape -> r / (z + eps * sign(z)), z = z1 + z2, sign(0) = +1."""
    others = (z1,) if z2 is None else (z1, z2)
    if any(o.shape != r.shape for o in others):
        raise ValueError(f"r, z1 and z2 must have one shape, got {tuple(r.shape)}, "
                         f"{', '.join(str(tuple(o.shape)) for o in others)}")
    module = KERNELS.for_call(backend, r.dtype)
    if module is None or r.dtype != torch.float32 or not _dense_alike(r, *others):
        return ref.lrp_ratio(r, z1, z2, eps)
    cl = _channels_last(r)
    views = [_memory_order(t, cl) for t in (r, *others)]  # views of the same memory, canonical strides
    out = _registry.empty(tuple(views[0].shape), r.dtype, r.device)
    module.lrp_ratio(views[0], views[1], views[2] if z2 is not None else None, eps, out)
    return _logical(out, cl)


@lrp_ratio.register_fake
def _(r, z1, z2, eps, backend):
    return torch.empty_like(r, memory_format=torch.channels_last if _channels_last(r) else torch.contiguous_format)
