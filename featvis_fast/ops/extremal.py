"""`featvis::smooth_masks`, `featvis::smooth_masks_backward`, `featvis::blend_levels` and
`featvis::blend_levels_backward`: the registered ops of the extremal-perturbation hot path
(semantics: featvis_fast._extremal_reference; Fong et al. 2019 as TorchRay computes it).

smooth_masks turns coarse mask parameters into smooth full-resolution masks; blend_levels writes
the perturbed copies that those masks select from a perturbation pyramid, straight in the model's
layout (channels-last out when asked), mirrored when jittered. The backward ops give the
gradients the optimizer needs; nothing here is registered with autograd (the method chains them).
Each op takes the backend name last; float64 always runs the reference.
"""
from __future__ import annotations

import torch

from .. import _extremal_reference as ref
from . import _registry
from ._layout import channels_last as _channels_last
from ._layout import logical as _logical
from ._layout import memory_order as _memory_order
from ._registry import Kernels

KERNELS = Kernels("extremal", smooth_masks="smooth_masks_triton", smooth_masks_backward="smooth_masks_backward_triton",
                  blend_levels="blend_levels_triton", blend_levels_backward="blend_levels_backward_triton")


def _check_float(name: str, t: torch.Tensor, dim: int) -> None:
    if t.dim() != dim or t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be a {dim}-D float32 or float64 tensor, got {t.dtype} {tuple(t.shape)}")


def _check_masks_args(params: torch.Tensor, weights: torch.Tensor, padding: int) -> None:
    _check_float("params", params, 3)
    if weights.dim() != 3 or weights.shape[0] != weights.shape[1] or weights.dtype != params.dtype \
            or weights.device != params.device:
        raise ValueError(f"weights must be (step, step, R * R) in params' dtype and device, got {weights.dtype} "
                         f"{tuple(weights.shape)} on {weights.device}")
    side = round(weights.shape[2] ** 0.5)
    if side * side != weights.shape[2] or side % 2 != 1:
        raise ValueError(f"weights' last dimension must be R * R with R odd, got {weights.shape[2]}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


@torch.library.custom_op("featvis::smooth_masks", mutates_args=())
def smooth_masks(params: torch.Tensor, weights: torch.Tensor, padding: int, coldness: float, out_h: int, out_w: int,
                 backend: str) -> torch.Tensor:
    """params (K, h, w), weights (step, step, R * R) -> full masks (K, out_h, out_w) in [0, 1]."""
    _check_masks_args(params, weights, padding)
    module = KERNELS.for_call(backend, params.dtype)
    if module is None:
        return ref.smooth_masks(params, weights, padding, coldness, (out_h, out_w))
    out = _registry.empty((params.shape[0], out_h, out_w), params.dtype, params.device)
    module.smooth_masks(params.contiguous(), weights.contiguous(), padding, coldness, out)
    return out


@smooth_masks.register_fake
def _(params, weights, padding, coldness, out_h, out_w, backend):
    return params.new_empty((params.shape[0], out_h, out_w))


@torch.library.custom_op("featvis::smooth_masks_backward", mutates_args=())
def smooth_masks_backward(grad: torch.Tensor, params: torch.Tensor, weights: torch.Tensor, padding: int,
                          coldness: float, backend: str) -> torch.Tensor:
    """grad (K, Ho, Wo), params (K, h, w) -> d(sum grad * smooth_masks(params))/d params (K, h, w)."""
    _check_masks_args(params, weights, padding)
    _check_float("grad", grad, 3)
    if grad.shape[0] != params.shape[0] or grad.dtype != params.dtype:
        raise ValueError(f"grad must be (K, Ho, Wo) in params' dtype with K = {params.shape[0]}, "
                         f"got {grad.dtype} {tuple(grad.shape)}")
    module = KERNELS.for_call(backend, params.dtype)
    if module is None:
        return ref.smooth_masks_backward(grad, params, weights, padding, coldness)
    out = _registry.empty(tuple(params.shape), params.dtype, params.device)
    module.smooth_masks_backward(grad.contiguous(), params.contiguous(), weights.contiguous(), padding, coldness, out)
    return out


@smooth_masks_backward.register_fake
def _(grad, params, weights, padding, coldness, backend):
    return torch.empty_like(params)


def _check_blend_args(pyramid: torch.Tensor, masks: torch.Tensor, src: torch.Tensor) -> None:
    _check_float("pyramid", pyramid, 5)
    _check_float("masks", masks, 3)
    if masks.dtype != pyramid.dtype or masks.device != pyramid.device:
        raise ValueError("masks must be in the pyramid's dtype and on its device")
    if tuple(masks.shape[1:]) != tuple(pyramid.shape[3:]):
        raise ValueError(f"masks (N, H, W) must match the pyramid's (H, W) = {tuple(pyramid.shape[3:])}, "
                         f"got {tuple(masks.shape)}")
    if src.dim() != 1 or src.dtype != torch.int32 or src.shape[0] != masks.shape[0]:
        raise ValueError(f"src must be a 1-D int32 tensor with one image index per mask, got {src.dtype} "
                         f"{tuple(src.shape)}")
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= pyramid.shape[0]):
        raise ValueError(f"src holds image indices outside [0, {pyramid.shape[0]})")


def _blend_shape(pyramid: torch.Tensor, n: int, channels_last: bool) -> tuple[int, ...]:
    _, _, c, h, w = pyramid.shape
    return (n, h, w, c) if channels_last else (n, c, h, w)


@torch.library.custom_op("featvis::blend_levels", mutates_args=())
def blend_levels(pyramid: torch.Tensor, masks: torch.Tensor, src: torch.Tensor, complement: bool, flip: bool,
                 channels_last: bool, backend: str) -> torch.Tensor:
    """pyramid (B, L, C, H, W), masks (N, H, W) in [0, 1], src (N,) int32 -> perturbed copies (N, C, H, W),
    channels-last when asked (see _extremal_reference.blend_levels)."""
    _check_blend_args(pyramid, masks, src)
    module = KERNELS.for_call(backend, pyramid.dtype)
    if module is None:
        out = ref.blend_levels(pyramid, masks, src, complement, flip)
        return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out = _registry.empty(_blend_shape(pyramid, masks.shape[0], channels_last), pyramid.dtype, pyramid.device)
    module.blend_levels(pyramid.contiguous(), masks.contiguous(), src.contiguous(), complement, flip, channels_last,
                        out)
    return _logical(out, channels_last)


@blend_levels.register_fake
def _(pyramid, masks, src, complement, flip, channels_last, backend):
    _, _, c, h, w = pyramid.shape
    out = pyramid.new_empty((masks.shape[0], c, h, w))
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@torch.library.custom_op("featvis::blend_levels_backward", mutates_args=())
def blend_levels_backward(grad: torch.Tensor, pyramid: torch.Tensor, masks: torch.Tensor, src: torch.Tensor,
                          complement: bool, flip: bool, backend: str) -> torch.Tensor:
    """grad (N, C, H, W) of blend_levels' output (either layout) -> d(sum grad * out)/d masks (N, H, W)."""
    _check_blend_args(pyramid, masks, src)
    if tuple(grad.shape) != (masks.shape[0], *pyramid.shape[2:]) or grad.dtype != pyramid.dtype:
        raise ValueError(f"grad must be (N, C, H, W) = {(masks.shape[0], *pyramid.shape[2:])} in the pyramid's "
                         f"dtype, got {grad.dtype} {tuple(grad.shape)}")
    module = KERNELS.for_call(backend, pyramid.dtype)
    if module is None:
        return ref.blend_levels_backward(grad, pyramid, masks, src, complement, flip)
    nhwc = _channels_last(grad)
    g = _memory_order(grad, nhwc)
    out = _registry.empty(tuple(masks.shape), masks.dtype, masks.device)
    module.blend_levels_backward(g, pyramid.contiguous(), masks.contiguous(), src.contiguous(), complement, flip,
                                 nhwc, out)
    return out


@blend_levels_backward.register_fake
def _(grad, pyramid, masks, src, complement, flip, backend):
    return torch.empty_like(masks)
