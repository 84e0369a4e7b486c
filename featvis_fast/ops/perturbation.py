"""`featvis::occlude`, `featvis::box_accumulate`, `featvis::rise_masks` and `featvis::apply_masks`:
the registered ops of the perturbation hot path (semantics: featvis_fast._perturbation_reference).

occlude and apply_masks write a whole batch of perturbed copies in one pass, straight into the
batch buffer, in x's layout (channels-last in, channels-last out); box_accumulate scatters one
value per window into per-pixel sums and counts; rise_masks builds RISE's upsampled, shifted
masks. Each op takes the backend name last; float64 always runs the reference. Not
differentiable (nothing here needs a gradient).
"""
from __future__ import annotations

import torch

from .. import _perturbation_reference as ref
from . import _registry
from ._layout import channels_last
from ._layout import logical as _logical
from ._layout import memory_format as _layout
from ._layout import memory_order as _memory_order
from ._registry import Kernels

KERNELS = Kernels("perturbation", occlude="occlude_triton", box_accumulate="box_accumulate_triton",
                  rise_masks="rise_masks_triton", apply_masks="apply_masks_triton")


def _check_images(x: torch.Tensor, fill: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if fill.shape != x.shape or fill.dtype != x.dtype or fill.device != x.device:
        raise ValueError(f"fill must match x: {tuple(x.shape)} {x.dtype} on {x.device}, "
                         f"got {tuple(fill.shape)} {fill.dtype} on {fill.device}")


def _check_index(src: torch.Tensor, batch: int, name: str = "src") -> None:
    if src.dim() != 1 or src.dtype != torch.int32:
        raise ValueError(f"{name} must be a 1-D int32 tensor, got {src.dtype} {tuple(src.shape)}")
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= batch):
        raise ValueError(f"{name} holds image indices outside [0, {batch})")


def _check_boxes(boxes: torch.Tensor, n: int, planes: int, height: int, width: int) -> None:
    if boxes.shape != (n, ref.BOX_FIELDS) or boxes.dtype != torch.int32:
        raise ValueError(f"boxes must be ({n}, {ref.BOX_FIELDS}) int32 (y0, y1, x0, x1, c0, c1), "
                         f"got {boxes.dtype} {tuple(boxes.shape)}")
    if n == 0:
        return
    y0, y1, x0, x1, c0, c1 = boxes.T
    ok = (0 <= y0) & (y0 <= y1) & (y1 <= height) & (0 <= x0) & (x0 <= x1) & (x1 <= width) \
        & (0 <= c0) & (c0 <= c1) & (c1 <= planes)
    if not bool(ok.all()):
        raise ValueError(f"boxes must lie inside ({planes}, {height}, {width}) with y0 <= y1, x0 <= x1, c0 <= c1")


def _copies(kind: str, x: torch.Tensor, fill: torch.Tensor, per_copy: tuple, src: torch.Tensor, backend: str,
            reference) -> torch.Tensor:
    """The shared tail of occlude / apply_masks: a batch of (N, C, H, W) copies in x's layout,
    from the reference or from the kernel `kind`, which writes into a memory-order buffer."""
    cl = channels_last(x)
    module = KERNELS.for_call(backend, x.dtype)
    if module is None:
        return reference().contiguous(memory_format=_layout(cl))
    xv, fv = _memory_order(x, cl), _memory_order(fill, cl)
    out = _registry.empty((src.numel(),) + tuple(xv.shape[1:]), x.dtype, x.device)
    if kind == "occlude":
        module.occlude(xv, fv, src.contiguous(), per_copy[0].contiguous(), cl, out)
    else:
        module.apply_masks(xv, fv, per_copy[0].contiguous(), src.contiguous(), cl, out)
    return _logical(out, cl)


def _copies_fake(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return x.new_empty((src.shape[0],) + tuple(x.shape[1:])).contiguous(memory_format=_layout(channels_last(x)))


@torch.library.custom_op("featvis::occlude", mutates_args=())
def occlude(x: torch.Tensor, fill: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor,
            backend: str) -> torch.Tensor:
    """x, fill (B, C, H, W); src (N,) int32; boxes (N, 6) int32 -> (N, C, H, W) occluded copies."""
    _check_images(x, fill)
    _check_index(src, x.shape[0])
    _check_boxes(boxes, src.numel(), x.shape[1], x.shape[2], x.shape[3])
    return _copies("occlude", x, fill, (boxes,), src, backend, lambda: ref.occlude(x, fill, src, boxes))


@occlude.register_fake
def _(x, fill, src, boxes, backend):
    return _copies_fake(x, src)


@torch.library.custom_op("featvis::box_accumulate", mutates_args=())
def box_accumulate(values: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor, batch: int, planes: int,
                   height: int, width: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """values (N,) fp32 or fp64, src (N,) int32, boxes (N, 6) int32 -> (sums, counts), each
    (batch, planes, H, W) in values' dtype (float64 runs the reference)."""
    if values.dim() != 1 or values.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"values must be a 1-D float32 or float64 tensor, got {values.dtype} {tuple(values.shape)}")
    _check_index(src, batch)
    if src.numel() != values.numel():
        raise ValueError(f"src has {src.numel()} entries for {values.numel()} values")
    _check_boxes(boxes, values.numel(), planes, height, width)
    module = KERNELS.for_call(backend, values.dtype)
    if module is None:
        return ref.box_accumulate(values, src, boxes, batch, planes, height, width)
    sums = _registry.empty((batch, planes, height, width), torch.float32, values.device)
    counts = _registry.empty((batch, planes, height, width), torch.float32, values.device)
    module.box_accumulate(values.contiguous(), src.contiguous(), boxes.contiguous(), sums, counts)
    return sums, counts


@box_accumulate.register_fake
def _(values, src, boxes, batch, planes, height, width, backend):
    shape = (batch, planes, height, width)
    return values.new_empty(shape), values.new_empty(shape)


@torch.library.custom_op("featvis::rise_masks", mutates_args=())
def rise_masks(grid: torch.Tensor, shifts: torch.Tensor, height: int, width: int, backend: str) -> torch.Tensor:
    """grid (N, s_h, s_w) fp32 or fp64, shifts (N, 2) int32 (dy, dx) -> (N, H, W) RISE masks in
    grid's dtype (float64 runs the reference)."""
    if grid.dim() != 3 or grid.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"grid must be (N, s_h, s_w) float32 or float64, got {grid.dtype} {tuple(grid.shape)}")
    if shifts.shape != (grid.shape[0], 2) or shifts.dtype != torch.int32:
        raise ValueError(f"shifts must be ({grid.shape[0]}, 2) int32, got {shifts.dtype} {tuple(shifts.shape)}")
    up_h, up_w = ref.upsampled_size(height, width, grid.shape[1], grid.shape[2])
    if grid.shape[0] and (int(shifts.min()) < 0 or int(shifts[:, 0].max()) > up_h - height
                          or int(shifts[:, 1].max()) > up_w - width):
        raise ValueError(f"shifts must lie in [0, {up_h - height}] x [0, {up_w - width}]")
    module = KERNELS.for_call(backend, grid.dtype)
    if module is None:
        return ref.rise_masks(grid, shifts, height, width)
    masks = _registry.empty((grid.shape[0], height, width), torch.float32, grid.device)
    module.rise_masks(grid.contiguous(), shifts.contiguous(), up_h, up_w, masks)
    return masks


@rise_masks.register_fake
def _(grid, shifts, height, width, backend):
    return grid.new_empty((grid.shape[0], height, width))


@torch.library.custom_op("featvis::apply_masks", mutates_args=())
def apply_masks(x: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor, src: torch.Tensor,
                backend: str) -> torch.Tensor:
    """x, fill (B, C, H, W); masks (N, H, W) fp32 (fp64 also for a float64 x); src (N,) int32 ->
    (N, C, H, W) = x*m + fill*(1-m)."""
    _check_images(x, fill)
    _check_index(src, x.shape[0])
    allowed = (torch.float32, torch.float64) if x.dtype == torch.float64 else (torch.float32,)
    if masks.shape != (src.numel(),) + tuple(x.shape[2:]) or masks.dtype not in allowed:
        raise ValueError(f"masks must be ({src.numel()}, {x.shape[2]}, {x.shape[3]}) "
                         f"{' or '.join(str(d).removeprefix('torch.') for d in allowed)}, "
                         f"got {masks.dtype} {tuple(masks.shape)}")
    return _copies("apply_masks", x, fill, (masks,), src, backend, lambda: ref.apply_masks(x, fill, masks, src))


@apply_masks.register_fake
def _(x, fill, masks, src, backend):
    return _copies_fake(x, src)
