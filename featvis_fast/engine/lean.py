"""Autograd functions that keep alive only what the input gradient needs.

Attribution never needs parameter gradients, yet autograd's convolution saves its input and
batch norm its input, whatever requires grad: one activation-sized tensor per layer. Inside an
attribution (parameters detached) these replacements save only the weight (conv, linear), two
per-channel factors (eval-mode batch norm) or the winners' indices (2-D max pooling), so with bit-packed rectifier masks
the backward keeps
about 1/32 of an activation per rectifier instead of two or three activations per block.
The numbers are torch's own kernels: the forward calls the same function, the backward calls
aten.convolution_backward with only the input gradient requested.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import _layout
from .lrp_epsilon import epsilon_factor

_CONV_DIMS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}


def _save(ctx, keep, z, eps):
    """Save what the backward needs: `keep`, plus LRP's ratio z / (z + eps * sign(z)) when eps is
    set (computed now: an in-place rectifier may overwrite z before the backward)."""
    ctx.save_for_backward(keep, epsilon_factor(z, eps) if eps is not None else None)


def _incoming(ctx, grad):
    """The backward signal, scaled by LRP's epsilon ratio when one was saved (see lrp_epsilon)."""
    keep, factor = ctx.saved_tensors
    return keep, (grad if factor is None else grad * factor)


def _tuple(v, d):
    return [int(v)] * d if isinstance(v, int) else [int(e) for e in v]


class _ConvInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, func, eps):
        z = func(x, weight, bias, stride, padding, dilation, groups)
        _save(ctx, weight, z, eps)
        # torch's convolution backward picks its kernel (and rounding) from the input's layout
        fmt = _layout.memory_format(_layout.channels_last(x))
        ctx.conf = (tuple(x.shape), fmt, stride, padding, dilation, groups)
        return z

    @staticmethod
    def backward(ctx, grad):
        weight, grad = _incoming(ctx, grad)
        scale = getattr(ctx, "folded_scale", None)
        if scale is not None:  # the following batch norm's backward, folded in (see fold_batch_norms)
            weight = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        shape, fmt, stride, padding, dilation, groups = ctx.conf
        # only the input's shape and layout are read; an expanded zero-stride placeholder would
        # send depthwise convolutions to a slow path (2.8x on CPU), an unwritten buffer does not
        placeholder = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        dx = torch.ops.aten.convolution_backward(grad, placeholder, weight, None, stride, padding, dilation,
                                                 False, [0] * len(stride), groups, [True, False, False])[0]
        return dx, None, None, None, None, None, None, None, None


class _LinearInputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        z = F.linear(x, weight, bias)
        _save(ctx, weight, z, eps)
        return z

    @staticmethod
    def backward(ctx, grad):
        weight, grad = _incoming(ctx, grad)
        return grad @ weight.to(grad.dtype), None, None, None


class _MaxPool2dInputGrad(torch.autograd.Function):
    """2-D max pooling that saves only the winners' indices (autograd also keeps the input, an
    activation 4x the output's size); the forward and backward are torch's own aten kernels."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        out, indices = torch.ops.aten.max_pool2d_with_indices(x, kernel, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(indices)
        fmt = _layout.memory_format(_layout.channels_last(x))
        ctx.conf = (tuple(x.shape), fmt, kernel, stride, padding, dilation, ceil_mode)
        return out

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        shape, fmt, kernel, stride, padding, dilation, ceil_mode = ctx.conf
        # only the input's shape and layout are read (see _ConvInputGrad)
        placeholder = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        dx = torch.ops.aten.max_pool2d_with_indices_backward(grad, placeholder, kernel, stride, padding, dilation,
                                                             ceil_mode, indices)
        return dx, None, None, None, None, None


def _max_pool2d(x, args, kwargs):
    """F.max_pool2d(x, ...) through _MaxPool2dInputGrad, or NotImplemented (indices returned,
    unbatched input)."""
    if _arg(args, kwargs, 6, "return_indices", False) or x.dim() != 4:
        return NotImplemented
    kernel = _tuple(_arg(args, kwargs, 1, "kernel_size", None), 2)
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _tuple(stride, 2)
    padding = _tuple(_arg(args, kwargs, 3, "padding", 0), 2)
    dilation = _tuple(_arg(args, kwargs, 4, "dilation", 1), 2)
    ceil_mode = bool(_arg(args, kwargs, 5, "ceil_mode", False))
    return _MaxPool2dInputGrad.apply(x, kernel, stride, padding, dilation, ceil_mode)


class _EvalBatchNorm(torch.autograd.Function):
    """Eval-mode batch norm; the backward is grad * invstd * weight, rounded as torch's own
    batch-norm backward rounds it (invstd = rsqrt(var + eps) in float64, cast to the input's
    dtype; then two products), with the two (1, C, 1, ...) factors the only thing saved. The
    forward is torch's own kernel, so its values are bit-identical to plain PyTorch's: a rectifier
    after it sees the same signs, and the gradient that flows back is PyTorch's, digit for digit.
    inplace: the result is written into x (its producer's only consumer; see rewrites), by the
    same kernel."""

    @staticmethod
    def forward(ctx, x, factors, func, args, kwargs, eps, inplace):
        if inplace and batch_norm_into(x, args, kwargs):
            ctx.mark_dirty(x)
            z = x
        else:
            z = func(x, *args[1:], **kwargs)
        _save(ctx, factors, z, eps)
        return z

    @staticmethod
    def backward(ctx, grad):
        factors, grad = _incoming(ctx, grad)
        if getattr(ctx, "folded", False):  # the convolution before it applies the scale
            return grad, None, None, None, None, None, None
        out = grad * factors[0]
        return (out.mul_(factors[1]) if factors.shape[0] > 1 else out), None, None, None, None, None, None


def _fold_scale(factors: torch.Tensor) -> torch.Tensor:
    """(C,) invstd * weight from _EvalBatchNorm's saved factors."""
    scale = factors[0].reshape(-1)
    return scale * factors[1].reshape(-1) if factors.shape[0] > 1 else scale


def batch_norm_into(x: torch.Tensor, args, kwargs) -> bool:
    """Eval batch norm of x written into x by torch's own kernel (native_batch_norm.out: the
    values F.batch_norm gives, bit for bit, without a fresh activation-sized tensor). False where
    that kernel does not take the call (then nothing was written)."""
    mean, var = _arg(args, kwargs, 1, "running_mean", None), _arg(args, kwargs, 2, "running_var", None)
    weight, bias = _arg(args, kwargs, 3, "weight", None), _arg(args, kwargs, 4, "bias", None)
    if _arg(args, kwargs, 5, "training", False) or mean is None or var is None:
        return False
    if x.stride() != _layout.fresh_strides(x):
        return False  # the next layer would see other strides than torch's output has (and may round otherwise)
    eps = float(_arg(args, kwargs, 7, "eps", 1e-5))
    empty = x.new_empty((0,))
    try:
        with torch.no_grad():
            torch.ops.aten.native_batch_norm.out(x, weight, bias, mean, var, False, 0.0, eps, out=x,
                                                 save_mean=empty, save_invstd=empty.clone())
    except (RuntimeError, TypeError):
        return False
    return True


def _arg(args, kwargs, index, name, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def eval_batch_norm_factors(args, kwargs, dtype: torch.dtype) -> torch.Tensor | None:
    """F.batch_norm call -> (F, C) backward factors in `dtype`: invstd = rsqrt(var + eps)
    computed in float64 as torch's CPU batch-norm backward computes it, then the weight
    when there is one (F = 2, else 1); None when the call is not an eval-mode batch norm with
    running statistics and constant parameters."""
    x = args[0] if args else kwargs.get("input")
    mean, var = _arg(args, kwargs, 1, "running_mean", None), _arg(args, kwargs, 2, "running_var", None)
    weight, bias = _arg(args, kwargs, 3, "weight", None), _arg(args, kwargs, 4, "bias", None)
    training, bn_eps = _arg(args, kwargs, 5, "training", False), float(_arg(args, kwargs, 7, "eps", 1e-5))
    if training or mean is None or var is None or not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    if any(t is not None and t.requires_grad for t in (weight, bias, mean, var)):
        return None
    with torch.no_grad():
        # rsqrt, not 1 / sqrt: torch's kernel rounds as rsqrt does (1 / sqrt differs in the last bit
        # for about 3% of float64 variances)
        rows = [torch.rsqrt(var.double() + bn_eps).to(dtype)]
        if weight is not None:
            rows.append(weight.to(dtype))
        return torch.stack(rows)


def lean_call(func, args, kwargs, eps: float | None = None, inplace: bool = False):
    """A lean replacement's result for this call, or NotImplemented to run `func` as usual.

    Only taken when grad is on, the input requires grad and no parameter of the call does.
    eps: also apply LRP's epsilon ratio in the backward (the output is then saved too).
    inplace: a batch norm may write into its input (the forward rewrites found it its only consumer)."""
    if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
        return NotImplemented
    x = args[0]
    if not x.requires_grad:
        return NotImplemented
    if func in _CONV_DIMS:
        d = _CONV_DIMS[func]
        weight, bias = _arg(args, kwargs, 1, "weight", None), _arg(args, kwargs, 2, "bias", None)
        padding = _arg(args, kwargs, 4, "padding", 0)
        if (isinstance(padding, str) or weight is None or weight.requires_grad
                or (bias is not None and bias.requires_grad)):
            return NotImplemented
        if x.dim() != d + 2:  # unbatched input: leave it to torch
            return NotImplemented
        stride = _tuple(_arg(args, kwargs, 3, "stride", 1), d)
        dilation = _tuple(_arg(args, kwargs, 5, "dilation", 1), d)
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        return _ConvInputGrad.apply(x, weight, bias, stride, _tuple(padding, d), dilation, groups, func, eps)
    if func is F.linear:
        weight, bias = _arg(args, kwargs, 1, "weight", None), _arg(args, kwargs, 2, "bias", None)
        if weight is None or weight.requires_grad or (bias is not None and bias.requires_grad):
            return NotImplemented
        return _LinearInputGrad.apply(x, weight, bias, eps)
    if func is F.max_pool2d:
        return _max_pool2d(x, args, kwargs)
    if func is F.batch_norm:
        factors = eval_batch_norm_factors(args, kwargs, x.dtype)
        if factors is None:
            return NotImplemented
        factors = factors.view((factors.shape[0], 1, -1) + (1,) * (x.dim() - 2))  # (F, 1, C, 1, ...)
        return _EvalBatchNorm.apply(x, factors, func, args, kwargs, eps, inplace and x._base is None)
    return NotImplemented


def fold_batch_norms(output: torch.Tensor) -> int:
    """Fold each eval batch norm's backward into the convolution that feeds it, where that
    convolution's output has no other consumer in the graph: the convolution's input gradient
    uses weight * scale and the batch norm passes the gradient through, which saves a full pass
    (and an activation-sized allocation) per pair. Called after the forward pass, when the
    whole graph is known, and only without LRP's epsilon ratios. Returns the number folded."""
    if output.grad_fn is None:
        return 0
    consumers: dict = {}
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                consumers[child] = consumers.get(child, 0) + 1
                stack.append(child)
    folded = 0
    for node in seen:
        if type(node).__name__ != "_EvalBatchNormBackward" or getattr(node, "folded", False):
            continue
        producer = node.next_functions[0][0]
        if type(producer).__name__ != "_ConvInputGradBackward" or consumers.get(producer) != 1:
            continue
        if getattr(producer, "folded_scale", None) is not None:
            continue
        scale = _fold_scale(node.saved_tensors[0])
        if scale.shape[0] != producer.saved_tensors[0].shape[0]:
            continue
        producer.folded_scale = scale
        node.folded = True
        folded += 1
    return folded

