"""Forward-pass rewrites learnt per model: batch norm folded into its convolution, rectifiers in
place, zero pads folded into the next convolution's padding.

Three rewrites, each legal only when a layer's output has exactly one consumer:
- conv -> eval batch norm: BN(conv(x, W) + b) = conv(x, W * s) + (b * s + t), with s, t the batch
  norm's per-channel scale and shift (Ioffe & Szegedy 2015): one convolution instead of a
  convolution, a normalization pass and an activation-sized allocation, forward and backward.
- conv or batch norm -> rectifier: the rectifier writes into its input instead of a fresh
  tensor. On the CPU a fresh activation-sized tensor costs more in page faults than the
  rectifier's arithmetic (10.4 ms vs 0.7 ms in place for (8, 96, 112, 112) fp32 on 2 cores).
- symmetric zero F.pad -> convolution (TF-style 'same' padding, as EfficientNet-Lite has it):
  the padded copy is never made; the convolution pads by itself (a quarter of an
  EfficientNet-Lite0 forward on 2 cores went to building padded copies).

A torch-function mode meets a layer before its consumers, so the rewrites follow a plan that
earlier calls on the same model taught:
- watching: a convolution, batch norm or zero-pad output that is not rewritten is watched, and
  each torch function that takes it is noted. After a forward that ran to the end, an output
  that died having had one consumer of a kind it can be rewritten for gets that rewrite;
  anything else (more consumers, an output still alive: returned, captured, stored)
  refuses that layer for good.
- rewriting: a planned layer returns a stand-in, an alias of its (possibly folded) output (for
  a pad: an uninitialized tensor of the padded shape). The planned consumer, given the
  stand-in, works on the real output (the batch norm returns it, the rectifier writes into it,
  the convolution pads the unpadded input). Any other use of the stand-in (any torch function but shape
  queries, a second consumer, a consumer under another grad or inference mode, batch-norm
  tensors changed since the fold), or a stand-in still alive after the forward, raises
  RewriteMismatch; the caller refuses that layer and runs the call again without rewrites,
  with torch's RNG state restored (a model's other side effects happen twice then). A
  mismatch that reaches the caller as another exception is still recognized. A plan can be
  wrong; a result cannot.
Only plain batched outputs get stand-ins; views (unbatched convolutions) are never rewritten.
Fused weights are computed afresh in every call, so weights changed in any way are used.
Not seen: a C++ function called directly (not a torch function or torch.library op) reading a
layer output that also feeds a batch norm or rectifier; `set_forward_rewrites(False)` is for
such models. Rewrites are off for models with hooks or modules in training mode, and for LRP.
"""
from __future__ import annotations

import weakref
from collections import Counter
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from . import _rectifiers
from ._lean import batch_norm_affine

CONVOLUTIONS = frozenset({F.conv1d, F.conv2d, F.conv3d})
_CONV_DIMS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
RECTIFIER = "rectifier"
PAD_INTO_CONV = "padding of the convolution"
_IN_PLACE = "in place"
_REFUSED = "refused"  # a watched output that can never be rewritten (a view, an unbatched output)
_T = torch.Tensor
_SHAPE_METHODS = frozenset({_T.dim, _T.size, _T.stride, _T.is_contiguous, _T.numel, _T.nelement,
                            _T.element_size, _T.__len__, _T.is_floating_point, _T.is_complex, _T.get_device})
_SHAPE_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "requires_grad", "is_cuda", "layout"})
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_PLANS: "weakref.WeakKeyDictionary[torch.nn.Module, Plan]" = weakref.WeakKeyDictionary()
_enabled = True


class RewriteMismatch(Exception):
    """A rewritten layer's output was used other than by its planned consumer. (Not a
    RuntimeError, which model code is likelier to catch; a caught one is still found afterwards.)"""

    def __init__(self, key) -> None:
        super().__init__(f"forward rewrite plan does not hold for layer {key}")
        self.key = key


def set_forward_rewrites(enabled: bool) -> bool:
    """Switch the forward rewrites on or off for all attributions; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


class _BatchNorm:
    """The tensors of one eval F.batch_norm call, held weakly (they belong to the model)."""

    def __init__(self, mean, var, weight, bias, eps: float) -> None:
        self.refs = tuple(None if t is None else weakref.ref(t) for t in (mean, var, weight, bias))
        self.eps = eps

    @classmethod
    def of(cls, args, kwargs) -> "_BatchNorm | None":
        """The batch norm of an F.batch_norm call, or None unless it is an eval one with running statistics."""
        mean, var, weight, bias, training, eps = [
            args[i] if len(args) > i else kwargs.get(name, default) for i, name, default in
            ((1, "running_mean", None), (2, "running_var", None), (3, "weight", None), (4, "bias", None),
             (5, "training", False), (7, "eps", 1e-5))]
        if training or not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
            return None
        return cls(mean, var, weight, bias, float(eps))

    def same(self, other: "_BatchNorm | None") -> bool:
        return other is not None and self.eps == other.eps and all(
            (a is None and b is None) or (a is not None and b is not None and a() is not None and a() is b())
            for a, b in zip(self.refs, other.refs))

    def tensors(self):
        return tuple(None if r is None else r() for r in self.refs)

    def versions(self) -> tuple:
        """The tensors' version counters: an in-place change between the folded convolution and
        the batch norm call shows as a mismatch."""
        return tuple(None if t is None else t._version for t in self.tensors())


class Plan:
    """What calls on one model taught: layer key -> its output's one consumer (a _BatchNorm or RECTIFIER)."""

    def __init__(self) -> None:
        self.rewrites: dict[tuple, object] = {}
        self.refused: set[tuple] = set()

    def refuse(self, key) -> None:
        self.refused.add(key)
        self.rewrites.pop(key, None)


class _Note(NamedTuple):
    key: tuple | None  # the layer whose output after() registers
    rewrite: object  # its planned consumer, or None to watch it
    inplace: bool  # this call is a rectifier that writes into its input


def _has_hooks(model: torch.nn.Module) -> bool:
    glob = torch.nn.modules.module
    if any(getattr(glob, "_global" + name, None) for name in _HOOK_DICTS):
        return True
    return any(getattr(m, name) for m in model.modules() for name in _HOOK_DICTS)


def start(model: torch.nn.Module, *, rewrite: bool = True) -> "ForwardRewrites | None":
    """Rewrite state for one forward of `model`, or None where rewrites do not apply."""
    if not _enabled or _has_hooks(model) or any(m.training for m in model.modules()):
        return None
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = Plan()
    return ForwardRewrites(plan, rewrite=rewrite)


def run(model: torch.nn.Module, attribution, *, allowed: bool = True):
    """attribution(rewrites) with forward rewrites where they apply; after a RewriteMismatch the
    plan refuses that layer and the call runs again, only watching."""
    rewrites = start(model) if allowed else None
    if rewrites is None:
        return attribution(None)
    rng = _rng_state()
    try:
        return attribution(rewrites)
    except Exception as exc:
        # a mismatch may reach here as another exception (re-raised by the model, or through
        # TorchScript / pybind): the state says whether one happened
        key = exc.key if isinstance(exc, RewriteMismatch) else rewrites.mismatch
        if key is None:
            raise
        rewrites.plan.refuse(key)
    _set_rng_state(rng)  # the rerun draws the same random numbers the first attempt did
    return attribution(start(model, rewrite=False))


def _rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _tensors(args, kwargs):
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


def _only_shape(func) -> bool:
    if func in _SHAPE_METHODS:
        return True
    return getattr(func, "__name__", "") == "__get__" and getattr(getattr(func, "__self__", None), "__name__",
                                                                   None) in _SHAPE_ATTRIBUTES


def _consumer(func, args, kwargs):
    """What kind of consumer a call is for its input tensor: a _BatchNorm, RECTIFIER, PAD_INTO_CONV
    (a convolution with numeric padding), _IN_PLACE (a rectifier already in place: the tensor is
    its output from then on) or None (anything else)."""
    if func is F.batch_norm:
        return _BatchNorm.of(args, kwargs)
    if func in CONVOLUTIONS:
        return PAD_INTO_CONV if _conv_padding(func, args, kwargs) is not None else None
    call = _rectifiers.parse(func, args, kwargs)
    if call is None:
        return None
    return _IN_PLACE if call.inplace else RECTIFIER


def _pad_amounts(args, kwargs) -> tuple[int, ...] | None:
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


def _conv_padding(func, args, kwargs) -> tuple[int, ...] | None:
    """A convolution call's padding per spatial dimension, or None (a string, or an unbatched input)."""
    x = args[0] if args else kwargs.get("input")
    padding = args[4] if len(args) > 4 else kwargs.get("padding", 0)
    d = _CONV_DIMS[func]
    if not isinstance(x, torch.Tensor) or x.dim() != d + 2 or isinstance(padding, str):
        return None
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * d
    if isinstance(padding, (list, tuple)) and len(padding) == d and all(type(p) is int for p in padding):
        return tuple(padding)
    return None


def _with_input_and_padding(args, kwargs, x, padding):
    args, kwargs = _with_input(args, kwargs, x)
    if len(args) > 4:
        return (*args[:4], padding, *args[5:]), kwargs
    return args, {**kwargs, "padding": padding}


def _with_input(args, kwargs, x):
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "input": x}


def _grad_modes() -> tuple[bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


class _Entry:
    """A watched output, or a stand-in: the tensor (weakly), its layer, the planned consumer, the
    grad modes it was made under, and (stand-ins) the real output and the BN tensors' versions."""

    __slots__ = ("ref", "key", "rewrite", "consumers", "modes", "base", "versions", "pad")

    def __init__(self, tensor, key, rewrite, base=None, versions=None, pad=None) -> None:
        self.ref, self.key, self.rewrite, self.consumers = weakref.ref(tensor), key, rewrite, []
        # base: the real output, held until its consumer takes it (a view does not keep its base's
        # Python object in inference mode)
        self.modes, self.base, self.versions, self.pad = _grad_modes(), base, versions, pad


class ForwardRewrites:
    """Per-call state, driven by RectifierRuleMode: before() and after() around every torch function."""

    def __init__(self, plan: Plan, *, rewrite: bool = True) -> None:
        self.plan, self.rewrite = plan, rewrite
        self.rewritten = Counter()
        self.mismatch = None
        self._uses: Counter[tuple] = Counter()
        self._standins: dict[int, _Entry] = {}
        self._watched: dict[int, _Entry] = {}
        self._all_watched: list[_Entry] = []

    def before(self, func, args, kwargs):
        """-> (result or NotImplemented, args, kwargs, note for after()). The result is the real
        output when `func` is the planned batch norm of a stand-in; a planned rectifier gets the
        real output as its input and note.inplace. Raises RewriteMismatch on any other use."""
        if _only_shape(func):
            return NotImplemented, args, kwargs, None
        result, inplace = NotImplemented, False
        if self._standins or self._watched:
            for at_input, t in _tensors(args, kwargs):
                entry = self._standins.get(id(t))
                if entry is not None and entry.ref() is t:
                    base = entry.base
                    if entry.consumers or not at_input or entry.modes != _grad_modes() or base is None:
                        self._mismatch(entry.key)
                    if isinstance(entry.rewrite, _BatchNorm) and func is F.batch_norm \
                            and entry.rewrite.same(_BatchNorm.of(args, kwargs)) \
                            and entry.versions == entry.rewrite.versions():
                        result = base
                    elif entry.rewrite is RECTIFIER and _rectifiers.parse(func, args, kwargs) is not None:
                        args, kwargs = _with_input(args, kwargs, base)
                        inplace = True
                    elif entry.rewrite is PAD_INTO_CONV and func in CONVOLUTIONS \
                            and _conv_padding(func, args, kwargs) is not None \
                            and len(entry.pad) == _CONV_DIMS[func]:
                        padding = tuple(c + p for c, p in zip(_conv_padding(func, args, kwargs), entry.pad))
                        args, kwargs = _with_input_and_padding(args, kwargs, base, padding)
                    else:
                        self._mismatch(entry.key)
                    entry.base = None
                    entry.consumers.append(func)
                    continue
                watched = self._watched.get(id(t))
                if watched is not None and watched.ref() is t:
                    same_modes = watched.modes == _grad_modes()
                    consumer = _consumer(func, args, kwargs) if at_input and same_modes else None
                    watched.consumers.append(consumer)
                    if consumer is _IN_PLACE:
                        del self._watched[id(t)]
        key = rewrite = None
        if func in CONVOLUTIONS:
            key, rewrite, args, kwargs = self._convolution(args, kwargs)
        elif func is F.batch_norm:
            key, rewrite = self._batch_norm(args, kwargs)
        elif func is F.pad and result is NotImplemented:
            amounts = _pad_amounts(args, kwargs)
            if amounts is not None:
                key, planned = self._key("pad", None)
                if planned is PAD_INTO_CONV:
                    return self._pad_standin(args[0] if args else kwargs["input"], key, amounts), args, kwargs, None
        if key is None and not inplace:
            return result, args, kwargs, None
        return result, args, kwargs, _Note(key, rewrite, inplace)

    def after(self, out, note: _Note | None):
        """The call's output, or a stand-in for it where its consumer is planned; watched otherwise."""
        if note is None or note.key is None or not isinstance(out, torch.Tensor):
            return out
        plain = out._base is None and out.dim() >= 3  # a batched output of its own, not a view
        if note.rewrite is None or not plain:
            if isinstance(note.rewrite, _BatchNorm):  # already folded: it cannot go on unnoticed
                self._mismatch(note.key)
            entry = _Entry(out, note.key, None if plain else _REFUSED)
            self._watched[id(out)] = entry
            self._all_watched.append(entry)
            return out
        standin = out.view_as(out)
        versions = note.rewrite.versions() if isinstance(note.rewrite, _BatchNorm) else None
        self._standins[id(standin)] = _Entry(standin, note.key, note.rewrite, base=out, versions=versions)
        self.rewritten["batch_norm" if isinstance(note.rewrite, _BatchNorm) else RECTIFIER] += 1
        return standin

    def _pad_standin(self, x: torch.Tensor, key, amounts) -> torch.Tensor:
        """The padded tensor is never made: its convolution pads x itself. The stand-in has its
        shape and layout and no defined values."""
        shape = tuple(x.shape[:2]) + tuple(n + 2 * p for n, p in zip(x.shape[2:], amounts))
        fmt = torch.channels_last if x.dim() == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        standin = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        self._standins[id(standin)] = _Entry(standin, key, PAD_INTO_CONV, base=x, pad=amounts)
        self.rewritten["pad"] += 1
        return standin

    def _key(self, kind: str, tensor: torch.Tensor | None):
        """(kind, id of the layer's weight or statistics, n-th use of it in this call)."""
        ident = (kind, id(tensor))
        n = self._uses[ident]
        self._uses[ident] += 1
        key = (kind, id(tensor), n)
        if key in self.plan.refused:
            return None, None
        return key, (self.plan.rewrites.get(key) if self.rewrite else None)

    def _convolution(self, args, kwargs):
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        if not isinstance(weight, torch.Tensor):
            return None, None, args, kwargs
        key, planned = self._key("conv", weight)
        if isinstance(planned, _BatchNorm):
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            fused = _fused(weight, bias, planned, args[0] if args else kwargs.get("input"))
            if fused is None:
                self.plan.refuse(key)
                return None, None, args, kwargs
            args, kwargs = _with_weight_and_bias(args, kwargs, *fused)
        return key, planned, args, kwargs

    def _batch_norm(self, args, kwargs):
        bn = _BatchNorm.of(args, kwargs)
        if bn is None:
            return None, None
        key, planned = self._key("bn", bn.refs[0]())
        return key, (planned if planned is RECTIFIER else None)

    def _mismatch(self, key):
        self.mismatch = key
        raise RewriteMismatch(key)

    def check_no_escapes(self) -> None:
        """After the forward: a mismatch met (even if the model caught it), or a stand-in still
        alive (returned, captured or stored), means the plan did not hold."""
        if self.mismatch is not None:
            raise RewriteMismatch(self.mismatch)
        for entry in self._standins.values():
            if entry.ref() is not None:
                raise RewriteMismatch(entry.key)

    def learn(self) -> None:
        """After a forward that ran to the end and its backward: update the plan from the watched outputs."""
        plan = self.plan
        for entry in self._all_watched:
            key, consumers = entry.key, entry.consumers
            if key in plan.refused:
                continue
            one = consumers[0] if len(consumers) == 1 else None
            legal = entry.rewrite is not _REFUSED and _legal(key[0], one)
            if entry.ref() is not None or not legal:
                plan.refuse(key)
                continue
            known = plan.rewrites.get(key)
            if known is None:
                plan.rewrites[key] = one
            elif not (known is one or (isinstance(known, _BatchNorm) and known.same(one))):
                plan.refuse(key)


def _legal(kind: str, consumer) -> bool:
    """Whether a layer of this kind may be rewritten for this (one) consumer."""
    if kind == "conv":
        return consumer is RECTIFIER or isinstance(consumer, _BatchNorm)
    if kind == "bn":
        return consumer is RECTIFIER
    return kind == "pad" and consumer is PAD_INTO_CONV


def _fused(weight: torch.Tensor, bias, bn: _BatchNorm, x):
    """(weight * scale, bias * scale + shift) for a conv weight (C_out, ...), or None. The weight
    is laid out channels-last for a channels-last input (oneDNN then skips a reorder per call)."""
    mean, var, bn_weight, bn_bias = bn.tensors()
    if mean is None or var is None or any(r is not None and t is None for r, t in zip(bn.refs[2:], (bn_weight, bn_bias))):
        return None
    if mean.numel() != weight.shape[0] or weight.dim() < 3:
        return None
    wide = torch.float64 if weight.dtype == torch.float64 else torch.float32
    scale, shift = batch_norm_affine(mean, var, bn_weight, bn_bias, bn.eps, wide)
    fmt = torch.channels_last if weight.dim() == 4 and isinstance(x, torch.Tensor) and x.dim() == 4 \
        and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    with torch.no_grad():
        scale_view = scale.view((-1,) + (1,) * (weight.dim() - 1))
        if weight.dtype == wide:
            fused_weight = torch.mul(weight, scale_view, out=torch.empty_like(weight, memory_format=fmt))
        else:
            fused_weight = (weight.to(wide) * scale_view).to(weight.dtype, memory_format=fmt)
        fused_bias = shift if bias is None else bias.to(wide) * scale + shift
    return fused_weight, fused_bias.to(weight.dtype)


def _with_weight_and_bias(args, kwargs, weight, bias):
    args, kwargs = list(args), dict(kwargs)
    for i, name, value in ((1, "weight", weight), (2, "bias", bias)):
        if len(args) > i:
            args[i] = value
        else:
            kwargs[name] = value
    return tuple(args), kwargs
