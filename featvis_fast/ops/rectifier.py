"""`featvis::rectify`, `featvis::rectify_` and `featvis::rectify_backward`: the registered ops of the
rectifier-rule hot path (semantics: featvis_fast._rectifier_reference).

`rectify` is differentiable (register_autograd): its forward saves only the bit-packed mask (none
for DeconvNet) and its backward is `rectify_backward`. The in-place `rectify_` mutates x and
returns the mask; `rectify_inplace` wraps it in an autograd.Function (mark_dirty) so in-place
rectifiers (`nn.ReLU(inplace=True)`, `torch.relu_`) keep their semantics and get the same rule.
Each op takes the backend name last; float64 always runs the reference.
"""
from __future__ import annotations

import torch

from .. import _rectifier_reference as ref
from . import _registry
from ._layout import channels_last
from ._layout import logical as _logical
from ._layout import memory_order as _memory_order
from ._registry import Kernels

KERNELS = Kernels("rectifier", rectify="rectify_triton", rectify_backward="rectify_backward_triton")


def _check_rule(rule: int) -> None:
    if rule not in ref.RULES:
        raise ValueError(f"unknown rule {rule}; expected 0 (backprop), 1 (deconvnet) or 2 (guided)")


def _mask_buffer(x: torch.Tensor, rule: int) -> torch.Tensor:
    words = ref.words_for(x.numel()) if rule != ref.DECONVNET else 0
    return _registry.empty((words,), torch.int32, x.device)


@torch.library.custom_op("featvis::rectify", mutates_args=())
def rectify(x: torch.Tensor, lo: float, hi: float, slope: float, rule: int,
            backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x (any shape) -> (y like x, packed mask (ceil(n/32),) int32; (0,) for DeconvNet, which needs none).

    y = clamp(x, lo, hi) when slope == 0, else x > 0 ? x : slope * x (lo = 0, hi = inf).
    A channels-last x gives a channels-last y and a mask in NHWC order (see `channels_last`)."""
    _check_rule(rule)
    cl = channels_last(x)
    v = _memory_order(x, cl)
    module = KERNELS.for_call(backend, x.dtype)
    if module is None:
        y, packed = ref.rectify(v, lo, hi, slope, save_mask=rule != ref.DECONVNET)
        return _logical(y, cl), packed
    y = _registry.empty(tuple(v.shape), v.dtype, v.device)
    packed = _mask_buffer(v, rule)
    module.rectify(v, lo, hi, slope, y, packed)
    return _logical(y, cl), packed


@rectify.register_fake
def _(x, lo, hi, slope, rule, backend):
    words = ref.words_for(x.numel()) if rule != ref.DECONVNET else 0
    layout = torch.channels_last if channels_last(x) else torch.contiguous_format
    return torch.empty_like(x, memory_format=layout), x.new_empty((words,), dtype=torch.int32)


@torch.library.custom_op("featvis::rectify_", mutates_args=("x",))
def rectify_(x: torch.Tensor, lo: float, hi: float, slope: float, rule: int, backend: str) -> torch.Tensor:
    """In place: x <- rectifier(x) (x contiguous or channels-last); returns the packed mask as `rectify` does."""
    _check_rule(rule)
    cl = channels_last(x)
    if not (cl or x.is_contiguous()):
        raise ValueError("featvis::rectify_ needs a contiguous or channels-last tensor")
    v = _memory_order(x, cl)  # a view of x's memory
    module = KERNELS.for_call(backend, x.dtype)
    if module is None:
        y, packed = ref.rectify(v, lo, hi, slope, save_mask=rule != ref.DECONVNET)
        v.copy_(y)
        return packed
    packed = _mask_buffer(v, rule)
    module.rectify(v, lo, hi, slope, v, packed)
    return packed


@rectify_.register_fake
def _(x, lo, hi, slope, rule, backend):
    words = ref.words_for(x.numel()) if rule != ref.DECONVNET else 0
    return x.new_empty((words,), dtype=torch.int32)


@torch.library.custom_op("featvis::rectify_backward", mutates_args=())
def rectify_backward(grad: torch.Tensor, packed: torch.Tensor, rule: int, slope: float, channels_last: bool,
                     backend: str) -> torch.Tensor:
    """grad (any shape), packed (ceil(n/32),) int32 -> dx like grad: dx = g * (f(m) * d(g)).

    channels_last: the mask is in NHWC order (it came from a channels-last forward); dx is then
    channels-last too."""
    _check_rule(rule)
    v = _memory_order(grad, channels_last)
    module = KERNELS.for_call(backend, grad.dtype)
    if module is None:
        dx = ref.rectify_backward(v, packed, rule, slope,
                                  compute_dtype=torch.float64 if grad.dtype == torch.float64 else torch.float32)
        return _logical(dx, channels_last)
    dx = _registry.empty(tuple(v.shape), v.dtype, v.device)
    module.rectify_backward(v, packed.contiguous(), rule, slope, dx)
    return _logical(dx, channels_last)


@rectify_backward.register_fake
def _(grad, packed, rule, slope, channels_last, backend):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty_like(grad, memory_format=layout)


def _setup_rectify(ctx, inputs, output):
    x, _, _, slope, rule, backend = inputs
    ctx.rule, ctx.slope, ctx.backend, ctx.cl = rule, slope, backend, channels_last(x)
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])


def _backward_rectify(ctx, grad_y, grad_packed):
    (packed,) = ctx.saved_tensors
    return rectify_backward(grad_y, packed, ctx.rule, ctx.slope, ctx.cl, ctx.backend), None, None, None, None, None


rectify.register_autograd(_backward_rectify, setup_context=_setup_rectify)


class _RectifyInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi, slope, rule, backend):
        ctx.rule, ctx.slope, ctx.backend, ctx.cl = rule, slope, backend, channels_last(x)
        packed = rectify_(x, lo, hi, slope, rule, backend)
        ctx.save_for_backward(packed)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad_y):
        (packed,) = ctx.saved_tensors
        return rectify_backward(grad_y, packed, ctx.rule, ctx.slope, ctx.cl, ctx.backend), None, None, None, None, None


def rectify_inplace(x: torch.Tensor, lo: float, hi: float, slope: float, rule: int, backend: str) -> torch.Tensor:
    """x <- rectifier(x) in place, differentiable with `rule` (x contiguous or channels-last); returns x."""
    return _RectifyInplace.apply(x, lo, hi, slope, rule, backend)
