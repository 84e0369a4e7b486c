"""Reading torch calls for the forward rewrites (_rewrites): which argument is the input, what a
consumer is, what a pad or a convolution's padding is, and building the changed calls.

A consumer of a watched output is classified as a BatchNorm (an eval F.batch_norm), a
Rectifier(lo, hi, slope) (an out-of-place rectifier), PAD_INTO_CONV (a convolution with numeric
padding), IN_PLACE (a rectifier already in place: the tensor is its output from then on) or
None (anything else).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from . import rectifiers as _rectifiers

CONVOLUTIONS = frozenset({F.conv1d, F.conv2d, F.conv3d})
CONV_DIMS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
PAD_INTO_CONV = "padding of the convolution"
IN_PLACE = "in place"
REFUSED = "refused"  # a watched output that can never be rewritten (a view, an unbatched output)
_T = torch.Tensor
_SHAPE_METHODS = frozenset({_T.dim, _T.size, _T.stride, _T.is_contiguous, _T.numel, _T.nelement,
                            _T.element_size, _T.__len__, _T.is_floating_point, _T.is_complex, _T.get_device})
_SHAPE_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "requires_grad", "is_cuda", "layout"})


@dataclass(frozen=True)
class Rectifier:
    """An out-of-place rectifier consumer: clamp to [lo, hi], or leaky with `slope`."""

    lo: float
    hi: float
    slope: float


class BatchNorm:
    """The tensors of one eval F.batch_norm call, held weakly (they belong to the model)."""

    def __init__(self, mean, var, weight, bias, eps: float) -> None:
        self.refs = tuple(None if t is None else weakref.ref(t) for t in (mean, var, weight, bias))
        self.eps = eps

    @classmethod
    def of(cls, args, kwargs) -> "BatchNorm | None":
        """The batch norm of an F.batch_norm call, or None unless it is an eval one with running statistics."""
        mean, var, weight, bias, training, eps = [
            args[i] if len(args) > i else kwargs.get(name, default) for i, name, default in
            ((1, "running_mean", None), (2, "running_var", None), (3, "weight", None), (4, "bias", None),
             (5, "training", False), (7, "eps", 1e-5))]
        if training or not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
            return None
        return cls(mean, var, weight, bias, float(eps))

    def same(self, other: "BatchNorm | None") -> bool:
        return other is not None and self.eps == other.eps and all(
            (a is None and b is None) or (a is not None and b is not None and a() is not None and a() is b())
            for a, b in zip(self.refs, other.refs))

    def tensors(self):
        return tuple(None if r is None else r() for r in self.refs)

    def versions(self) -> tuple:
        """The tensors' version counters: an in-place change between the folded convolution and
        the batch norm call shows as a mismatch."""
        return tuple(None if t is None else t._version for t in self.tensors())


def same_consumer(a, b) -> bool:
    return a == b if not isinstance(a, BatchNorm) else a.same(b)


def tensors(args, kwargs):
    """(is the input position, tensor) for each tensor among the arguments, however nested."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield i == 0, a
        elif isinstance(a, (list, tuple, dict)):
            for b in tree_leaves(a):
                if isinstance(b, torch.Tensor):
                    yield False, b
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            yield k == "input", v
        elif isinstance(v, (list, tuple, dict)):
            for b in tree_leaves(v):
                if isinstance(b, torch.Tensor):
                    yield False, b


def only_shape(func) -> bool:
    """A call that reads only metadata (shape, dtype, ...): no consumer of the values."""
    if func in _SHAPE_METHODS:
        return True
    return getattr(func, "__name__", "") == "__get__" and getattr(getattr(func, "__self__", None), "__name__",
                                                                   None) in _SHAPE_ATTRIBUTES


def rectifier_of(func, args, kwargs) -> Rectifier | None:
    call = _rectifiers.parse(func, args, kwargs)
    return None if call is None else Rectifier(call.lo, call.hi, call.slope)


def consumer(func, args, kwargs):
    """What kind of consumer a call is for its input tensor (see the module docstring)."""
    if func is F.batch_norm:
        return BatchNorm.of(args, kwargs)
    if func in CONVOLUTIONS:
        return PAD_INTO_CONV if conv_padding(func, args, kwargs) is not None else None
    call = _rectifiers.parse(func, args, kwargs)
    if call is None:
        return None
    return IN_PLACE if call.inplace else Rectifier(call.lo, call.hi, call.slope)


def legal(kind: str, consumer) -> bool:
    """Whether a layer of this kind may be rewritten for this (one) consumer."""
    if kind == "conv":
        return isinstance(consumer, (Rectifier, BatchNorm))
    if kind == "bn":
        return isinstance(consumer, Rectifier)
    return kind == "pad" and consumer is PAD_INTO_CONV


def pad_amounts(args, kwargs) -> tuple[int, ...] | None:
    """Per spatial dimension (first to last) the symmetric zero padding of an F.pad call on a
    batched (N, C, ...) tensor, or None when the call is anything else."""
    x = args[0] if args else kwargs.get("input")
    pad = args[1] if len(args) > 1 else kwargs.get("pad")
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value")
    if not isinstance(x, torch.Tensor) or mode != "constant" or not (value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)):
        return None
    spatial = x.dim() - 2
    if spatial not in (1, 2, 3) or not isinstance(pad, (list, tuple)) or len(pad) != 2 * spatial \
            or not all(type(p) is int for p in pad):
        return None
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(spatial)]  # F.pad lists the last dimension first
    if any(a != b or a < 0 for a, b in pairs):
        return None
    return tuple(a for a, _ in reversed(pairs))


def conv_padding(func, args, kwargs) -> tuple[int, ...] | None:
    """A convolution call's padding per spatial dimension, or None (a string, or an unbatched input)."""
    x = args[0] if args else kwargs.get("input")
    padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
    d = CONV_DIMS[func]
    if not isinstance(x, torch.Tensor) or x.dim() != d + 2 or isinstance(padding, str):
        return None
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * d
    if isinstance(padding, (list, tuple)) and len(padding) == d and all(type(p) is int for p in padding):
        return tuple(padding)
    return None


def with_input(args, kwargs, x):
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "input": x}


def with_input_and_padding(args, kwargs, x, padding):
    args, kwargs = with_input(args, kwargs, x)
    if len(args) > 4:
        return (*args[:4], padding, *args[5:]), kwargs
    return args, {**kwargs, "padding": padding}


def channels_last_4d(x) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 4 and not x.is_contiguous() \
        and x.is_contiguous(memory_format=torch.channels_last)


