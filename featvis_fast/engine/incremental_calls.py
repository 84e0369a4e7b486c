"""The calls incremental inference computes on patches only, one handler per kind of call.

A handler gets the mode, the call and the call's clean output (the recorded (B, C, H, W) map) and
returns the placeholder of the result, or NotImplemented when this call can not be patched (the
mode then materializes its inputs and runs it in full). Handlers never write into patches: an
in-place call computes new patches and rebinds its input's placeholder, so patches shared
between values stay valid.

  sliding windows  conv2d (any stride, padding, dilation, groups: grouped and depthwise alike),
                   max_pool2d, avg_pool2d: the output region the input's boxes reach, computed on
                   tiles gathered with the patches pasted in (changed_regions.through);
  pointwise        eval batch norm, rectifiers and other activations, eval dropout, arithmetic with
                   a number or a per-channel tensor: on the patches, same boxes;
  joins            residual sums and products, channel concatenation: on the boxes' union;
  zero pads        the boxes move by the padding.
"""
from __future__ import annotations

import math
from numbers import Number

import torch
import torch.nn.functional as F

from .changed_regions import Window, through, union
from .patched import Patched

_T = torch.Tensor


def _arg(args, kwargs, index: int, name: str, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _pair(value) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return int(value[0]), int(value[1])
    if isinstance(value, (tuple, list)) and len(value) == 1 and type(value[0]) is int:
        return int(value[0]), int(value[0])
    return None


def _slide(mode, state: Patched, rows: Window, cols: Window, clean: _T, pad: float, run):
    """A sliding-window layer on the patches: tiles around each box, the layer without padding on them."""
    out_h, out_w = clean.shape[2:]
    carried = through(state.regions, rows, cols, out_h, out_w)
    if carried.out.h * carried.out.w > mode.full_above * out_h * out_w:
        return NotImplemented
    if carried.out.empty:
        patches = clean.new_empty((state.count, clean.shape[1], 0, 0))
    else:
        patches = run(state.tile(carried.tile_y, carried.tile_x, carried.tile_h, carried.tile_w, pad))
        if patches.shape[2:] != (carried.out.h, carried.out.w):
            return NotImplemented
    return mode.hold(Patched(clean, state.src, carried.out, patches, state.backend))


def _conv2d(mode, func, args, kwargs, clean):
    x, weight = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    bias = _arg(args, kwargs, 2, "bias")
    stride, padding = _pair(_arg(args, kwargs, 3, "stride", 1)), _arg(args, kwargs, 4, "padding", 0)
    dilation, groups = _pair(_arg(args, kwargs, 5, "dilation", 1)), _arg(args, kwargs, 6, "groups", 1)
    state = mode.patched(x)
    if state is None or x.dim() != 4 or mode.state(weight) is not None or mode.state(bias) is not None \
            or stride is None or dilation is None or weight.dim() != 4:
        return NotImplemented
    kernel = tuple(weight.shape[2:])
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # torch pads (total // 2) before
        padding = tuple(dilation[i] * (kernel[i] - 1) // 2 for i in range(2))
    padding = _pair(padding)
    if padding is None:
        return NotImplemented
    rows = Window(kernel[0], stride[0], padding[0], dilation[0])
    cols = Window(kernel[1], stride[1], padding[1], dilation[1])
    return _slide(mode, state, rows, cols, clean,
                  0.0, lambda tile: F.conv2d(tile, weight, bias, stride, 0, dilation, groups))


def _pool_windows(kernel, stride, padding, dilation) -> tuple[Window, Window] | None:
    """A pooling call's windows along rows and columns (stride None or empty: the kernel size)."""
    kernel, padding, dilation = _pair(kernel), _pair(padding), _pair(dilation)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
    if None in (kernel, stride, padding, dilation):
        return None
    rows = Window(kernel[0], stride[0], padding[0], dilation[0])
    cols = Window(kernel[1], stride[1], padding[1], dilation[1])
    return rows, cols


def _floor_size(size: int, win: Window, pad_after: int) -> int:
    return (size + win.pad + pad_after - win.span) // win.stride + 1


def _max_pool2d(mode, func, args, kwargs, clean):
    x = _arg(args, kwargs, 0, "input")
    state = mode.patched(x)
    if state is None or x.dim() != 4 or _arg(args, kwargs, 6, "return_indices", False):
        return NotImplemented
    wins = _pool_windows(_arg(args, kwargs, 1, "kernel_size"), _arg(args, kwargs, 2, "stride"),
                         _arg(args, kwargs, 3, "padding", 0), _arg(args, kwargs, 4, "dilation", 1))
    if wins is None:
        return NotImplemented
    rows, cols = wins
    # cells past the edge are -inf: the max over a window ignores them, as the padded and
    # ceil-mode windows of max_pool2d do
    return _slide(mode, state, rows, cols, clean, -math.inf,
                  lambda tile: F.max_pool2d(tile, (rows.kernel, cols.kernel), (rows.stride, cols.stride), 0,
                                            (rows.dilation, cols.dilation)))


def _avg_pool2d(mode, func, args, kwargs, clean):
    x = _arg(args, kwargs, 0, "input")
    state = mode.patched(x)
    if state is None or x.dim() != 4:
        return NotImplemented
    wins = _pool_windows(_arg(args, kwargs, 1, "kernel_size"), _arg(args, kwargs, 2, "stride"),
                         _arg(args, kwargs, 3, "padding", 0), 1)
    if wins is None:
        return NotImplemented
    rows, cols = wins
    include_pad, divisor = _arg(args, kwargs, 5, "count_include_pad", True), _arg(args, kwargs, 6, "divisor_override")
    # every window must divide by its full size: no padding left out of the count, and no
    # ceil-mode window hanging past the padded edge (where the divisor shrinks)
    if (rows.pad or cols.pad) and not include_pad and divisor is None:
        return NotImplemented
    height, width = x.shape[2:]
    if clean.shape[2] != _floor_size(height, rows, rows.pad) or clean.shape[3] != _floor_size(width, cols, cols.pad):
        return NotImplemented
    return _slide(mode, state, rows, cols, clean, 0.0,
                  lambda tile: F.avg_pool2d(tile, (rows.kernel, cols.kernel), (rows.stride, cols.stride), 0,
                                            False, True, divisor))


def _batch_norm(mode, func, args, kwargs, clean):
    x = _arg(args, kwargs, 0, "input")
    state = mode.patched(x)
    mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
    weight, bias = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
    if state is None or _arg(args, kwargs, 5, "training", False) or not isinstance(mean, _T) \
            or not isinstance(var, _T) or any(mode.state(t) is not None for t in (mean, var, weight, bias)):
        return NotImplemented
    patches = F.batch_norm(state.patches, mean, var, weight, bias, False, 0.0, _arg(args, kwargs, 7, "eps", 1e-5))
    return mode.hold(state.with_patches(patches, base=clean))


# pointwise functions on one tensor: out-of-place form, and the position of an `inplace` argument
_POINTWISE = {
    F.relu: (F.relu, 1), F.relu6: (F.relu6, 1), F.hardtanh: (F.hardtanh, 3), F.leaky_relu: (F.leaky_relu, 2),
    F.elu: (F.elu, 2), F.celu: (F.celu, 2), F.selu: (F.selu, 1), F.silu: (F.silu, 1), F.mish: (F.mish, 1),
    F.hardswish: (F.hardswish, 1), F.hardsigmoid: (F.hardsigmoid, 1), F.gelu: (F.gelu, None),
    F.softplus: (F.softplus, None), F.threshold: (F.threshold, 3),
    torch.relu: (torch.relu, None), _T.relu: (torch.relu, None), torch.sigmoid: (torch.sigmoid, None),
    _T.sigmoid: (torch.sigmoid, None), torch.tanh: (torch.tanh, None), _T.tanh: (torch.tanh, None),
    torch.clamp: (torch.clamp, None), _T.clamp: (torch.clamp, None), torch.clamp_min: (torch.clamp_min, None),
    _T.clamp_min: (torch.clamp_min, None), torch.clamp_max: (torch.clamp_max, None),
    _T.clamp_max: (torch.clamp_max, None),
}
_POINTWISE_INPLACE = {
    torch.relu_: torch.relu, _T.relu_: torch.relu, F.relu_: torch.relu, F.hardtanh_: F.hardtanh,
    F.leaky_relu_: F.leaky_relu, F.elu_: F.elu, F.celu_: F.celu, F.selu_: F.selu, torch.sigmoid_: torch.sigmoid,
    _T.sigmoid_: torch.sigmoid, _T.tanh_: torch.tanh, _T.clamp_: torch.clamp, _T.clamp_min_: torch.clamp_min,
    _T.clamp_max_: torch.clamp_max,
}
_DROPOUTS = (F.dropout, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout)


def _pointwise(mode, func, args, kwargs, clean):
    x = _arg(args, kwargs, 0, "input")
    state = mode.patched(x)
    rest = (*args[1:], *(v for k, v in kwargs.items() if k != "input"))
    if state is None or any(isinstance(a, _T) for a in rest) or clean.shape[1:] != x.shape[1:]:
        return NotImplemented
    if func in _POINTWISE_INPLACE:
        inplace, plain, position = True, _POINTWISE_INPLACE[func], None
    else:
        plain, position = _POINTWISE[func]
        inplace = bool(_arg(args, kwargs, position, "inplace", False)) if position is not None else False
    args = list(args) if args else [state.patches]
    args[0] = state.patches
    kwargs = {k: v for k, v in kwargs.items() if k not in ("input", "inplace")}
    if position is not None and len(args) > position:
        args[position] = False
    out = state.with_patches(plain(*args, **kwargs), base=clean)
    return mode.hold(out, x if inplace else None)


def _dropout(mode, func, args, kwargs, clean):
    x = _arg(args, kwargs, 0, "input")
    if mode.patched(x) is None or _arg(args, kwargs, 2, "training", True):
        return NotImplemented
    return x  # eval dropout returns its input


# arithmetic: out-of-place form, and whether the call writes into its first operand
_ARITHMETIC = {
    torch.add: (torch.add, False), _T.add: (torch.add, False), _T.__add__: (torch.add, False),
    _T.__radd__: (_T.__radd__, False), _T.add_: (torch.add, True), _T.__iadd__: (torch.add, True),
    torch.sub: (torch.sub, False), _T.sub: (torch.sub, False), _T.__sub__: (torch.sub, False),
    _T.__rsub__: (_T.__rsub__, False), _T.sub_: (torch.sub, True), _T.__isub__: (torch.sub, True),
    torch.mul: (torch.mul, False), _T.mul: (torch.mul, False), _T.__mul__: (torch.mul, False),
    _T.__rmul__: (_T.__rmul__, False), _T.mul_: (torch.mul, True), _T.__imul__: (torch.mul, True),
    torch.div: (torch.div, False), _T.div: (torch.div, False), _T.__truediv__: (torch.div, False),
    _T.div_: (torch.div, True), _T.__itruediv__: (torch.div, True),
}


def _per_channel(t: _T, like: _T) -> bool:
    """t broadcasts against `like` (N, C, H, W) along neither the batch nor the spatial dimensions."""
    shape = tuple(t.shape)
    if len(shape) > 4 or (len(shape) == 4 and shape[0] != 1):
        return False
    return all(s == 1 for s in shape[-2:]) if len(shape) >= 2 else len(shape) == 0 or shape[0] == 1


def _arithmetic(mode, func, args, kwargs, clean):
    plain, inplace = _ARITHMETIC[func]
    a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
    if len(args) < 2 or not all(k == "alpha" for k in kwargs):
        return NotImplemented
    states = [mode.patched(v) for v in (a, b)]
    live = [s for s in states if s is not None]
    first = a if states[0] is not None else b
    if not live or (inplace and states[0] is None) or clean.shape[1:] != first.shape[1:] \
            or any(s.base.shape[1:] != clean.shape[1:] for s in live):
        return NotImplemented
    for value, state in zip((a, b), states):
        if state is None and not isinstance(value, Number) and not (
                isinstance(value, _T) and mode.state(value) is None and _per_channel(value, first)):
            return NotImplemented
    regions = union([s.regions for s in live], clean.shape[2], clean.shape[3])
    operands = [s.over(regions) if s is not None else v for v, s in zip((a, b), states)]
    out = Patched(clean, live[0].src, regions, plain(*operands, *args[2:], **kwargs), live[0].backend)
    return mode.hold(out, a if inplace else None)


def _cat(mode, func, args, kwargs, clean):
    tensors, dim = _arg(args, kwargs, 0, "tensors"), _arg(args, kwargs, 1, "dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or dim not in (1, -3):
        return NotImplemented
    states = [mode.patched(t) for t in tensors]
    if any(s is None for s in states) or any(s.base.shape[2:] != clean.shape[2:] for s in states):
        return NotImplemented
    regions = union([s.regions for s in states], clean.shape[2], clean.shape[3])
    patches = torch.cat([s.over(regions) for s in states], dim=1)
    return mode.hold(Patched(clean, states[0].src, regions, patches, states[0].backend))


def _pad(mode, func, args, kwargs, clean):
    x, pad = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "pad")
    state = mode.patched(x)
    if state is None or x.dim() != 4 or _arg(args, kwargs, 2, "mode", "constant") != "constant" \
            or not isinstance(pad, (list, tuple)) or len(pad) not in (2, 4) \
            or not all(type(p) is int and p >= 0 for p in pad):
        return NotImplemented
    top = pad[2] if len(pad) == 4 else 0
    return mode.hold(state.with_patches(state.patches, state.regions.shifted(top, pad[0]), base=clean))


def _same(mode, func, args, kwargs, clean):
    x = args[0] if args else None
    if mode.patched(x) is None:
        return NotImplemented
    return x if func is _T.contiguous else mode.hold(mode.patched(x))


HANDLERS = {
    F.conv2d: _conv2d, F.max_pool2d: _max_pool2d, F.avg_pool2d: _avg_pool2d, F.batch_norm: _batch_norm,
    **{f: _pointwise for f in (*_POINTWISE, *_POINTWISE_INPLACE)},
    **{f: _dropout for f in _DROPOUTS},
    **{f: _arithmetic for f in _ARITHMETIC},
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat, F.pad: _pad,
    _T.contiguous: _same, _T.clone: _same,
}


def kind(func) -> str:
    """A short name for a call, for IncrementalMode.stats."""
    return getattr(func, "__name__", None) or type(func).__name__
