"""Forward-pass rewrites learnt per model: batch norm and rectifiers in place, zero pads folded
into the next convolution's padding. (Reading the calls: _rewrite_calls.)

Every rewrite keeps plain PyTorch's values bit for bit. Folding batch norm into the convolution's
weights (and oneDNN's conv + rectifier post-op) was dropped: in forward-only passes it cost
float32 digits (RISE on timm res2net50: 2.7x PyTorch's own float32 error).

Three rewrites, each legal only when a layer's output has exactly one consumer:
- conv -> eval batch norm: the batch norm runs torch's own kernel in place on the convolution's
  output (no activation-sized allocation, values bit-identical to PyTorch's, so every rectifier
  mask is PyTorch's).
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
- rewriting: a planned layer returns a stand-in, an alias of its output (for
  a pad: an uninitialized tensor of the padded shape). The planned consumer, given the
  stand-in, works on the real output (the batch norm returns it, the rectifier writes into it,
  the convolution pads the unpadded input). Any other use of the stand-in (any torch function but shape
  queries, a second consumer, a consumer under another grad or inference mode, batch-norm
  tensors changed since the convolution), or a stand-in still alive after the forward, raises
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

from . import rewrite_calls as calls
from .rewrite_calls import CONVOLUTIONS, PAD_INTO_CONV, BatchNorm, Rectifier

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


class Plan:
    """What calls on one model taught: layer key -> its output's one consumer (see rewrite_calls)."""

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


def _grad_modes() -> tuple[bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


class _Entry:
    """A watched output, or a stand-in: the tensor (weakly), its layer, the planned consumer, the
    grad modes it was made under, and for stand-ins the real output (held until its consumer
    takes it: in inference mode a view does not keep its base's Python object), the BN tensors'
    versions and a pad's amounts."""

    __slots__ = ("ref", "key", "rewrite", "consumers", "modes", "base", "versions", "pad")

    def __init__(self, tensor, key, rewrite, base=None, versions=None, pad=None) -> None:
        self.ref, self.key, self.rewrite, self.consumers = weakref.ref(tensor), key, rewrite, []
        self.modes, self.base, self.versions, self.pad = _grad_modes(), base, versions, pad


class ForwardRewrites:
    """Per-call state, driven by RectifierRuleMode: before() and after() around every torch function.

    Each rewrite keeps plain PyTorch's values bit for bit: a batch norm after its convolution runs
    torch's own kernel in place on the convolution's output, a rectifier writes into its input.
    Rectifier masks, and so an attribution's float32 error, are then PyTorch's own."""

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
        output where `func` is a planned consumer that only passes it on; a planned batch norm or
        rectifier gets the real output as its input and note.inplace. Raises RewriteMismatch on any other use of a
        stand-in."""
        if calls.only_shape(func):
            return NotImplemented, args, kwargs, None
        result, inplace = NotImplemented, False
        if self._standins or self._watched:
            for at_input, t in calls.tensors(args, kwargs):
                entry = self._standins.get(id(t))
                if entry is not None and entry.ref() is t:
                    result, args, kwargs, inplace = self._consume(entry, func, args, kwargs, at_input, result, inplace)
                    continue
                watched = self._watched.get(id(t))
                if watched is not None and watched.ref() is t:
                    same_modes = watched.modes == _grad_modes()
                    consumer = calls.consumer(func, args, kwargs) if at_input and same_modes else None
                    watched.consumers.append(consumer)
                    if consumer is calls.IN_PLACE:
                        del self._watched[id(t)]
        key = rewrite = None
        if func in CONVOLUTIONS:
            key, rewrite, args, kwargs, result = self._convolution(func, args, kwargs)
        elif func is F.batch_norm:
            key, rewrite = self._batch_norm(args, kwargs)
        elif func is F.pad and result is NotImplemented:
            amounts = calls.pad_amounts(args, kwargs)
            if amounts is not None:
                key, planned = self._key("pad", None)
                if planned is PAD_INTO_CONV:
                    return self._pad_standin(args[0] if args else kwargs["input"], key, amounts), args, kwargs, None
        if key is None and not inplace:
            return result, args, kwargs, None
        return result, args, kwargs, _Note(key, rewrite, inplace)

    def _consume(self, entry: _Entry, func, args, kwargs, at_input, result, inplace):
        """A stand-in reaches a call: its planned consumer gets the real output, anything else mismatches."""
        base = entry.base
        if entry.consumers or not at_input or entry.modes != _grad_modes() or base is None:
            self._mismatch(entry.key)
        rw = entry.rewrite
        if isinstance(rw, BatchNorm) and func is F.batch_norm and rw.same(BatchNorm.of(args, kwargs)) \
                and entry.versions == rw.versions():
            args, kwargs = calls.with_input(args, kwargs, base)
            inplace = True
        elif isinstance(rw, Rectifier) and calls.rectifier_of(func, args, kwargs) is not None:
            args, kwargs = calls.with_input(args, kwargs, base)
            inplace = True
        elif rw is PAD_INTO_CONV and func in CONVOLUTIONS and calls.conv_padding(func, args, kwargs) is not None \
                and len(entry.pad) == calls.CONV_DIMS[func]:
            padding = tuple(c + p for c, p in zip(calls.conv_padding(func, args, kwargs), entry.pad))
            args, kwargs = calls.with_input_and_padding(args, kwargs, base, padding)
        else:
            self._mismatch(entry.key)
        entry.base = None
        entry.consumers.append(func)
        return result, args, kwargs, inplace

    def after(self, out, note: _Note | None):
        """The call's output, or a stand-in for it where its consumer is planned; watched otherwise."""
        if note is None or note.key is None or not isinstance(out, torch.Tensor):
            return out
        plain = out._base is None and out.dim() >= 3  # a batched output of its own, not a view
        if note.rewrite is None or not plain:
            entry = _Entry(out, note.key, None if plain else calls.REFUSED)
            self._watched[id(out)] = entry
            self._all_watched.append(entry)
            return out
        standin = out.view_as(out)
        versions = note.rewrite.versions() if isinstance(note.rewrite, BatchNorm) else None
        self._standins[id(standin)] = _Entry(standin, note.key, note.rewrite, base=out, versions=versions)
        self.rewritten["batch_norm" if isinstance(note.rewrite, BatchNorm) else "rectifier"] += 1
        return standin

    def _pad_standin(self, x: torch.Tensor, key, amounts) -> torch.Tensor:
        """The padded tensor is never made: its convolution pads x itself. The stand-in has its
        shape and layout and no defined values."""
        shape = tuple(x.shape[:2]) + tuple(n + 2 * p for n, p in zip(x.shape[2:], amounts))
        fmt = torch.channels_last if calls.channels_last_4d(x) else torch.contiguous_format
        standin = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        self._standins[id(standin)] = _Entry(standin, key, PAD_INTO_CONV, base=x, pad=amounts)
        self.rewritten["pad"] += 1
        return standin

    def _key(self, kind: str, tensor: torch.Tensor | None, peek: bool = False):
        """(kind, id of the layer's weight or statistics, n-th use of it in this call) and its
        planned rewrite; peek: the key the next such call will get, without counting one."""
        ident = (kind, id(tensor))
        n = self._uses[ident]
        if not peek:
            self._uses[ident] += 1
        key = (kind, id(tensor), n)
        if key in self.plan.refused:
            return None, None
        return key, (self.plan.rewrites.get(key) if self.rewrite else None)

    def _convolution(self, func, args, kwargs):
        """Key and plan of a convolution."""
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        if not isinstance(weight, torch.Tensor):
            return None, None, args, kwargs, NotImplemented
        key, planned = self._key("conv", weight)
        return key, planned, args, kwargs, NotImplemented

    def _batch_norm(self, args, kwargs):
        bn = BatchNorm.of(args, kwargs)
        if bn is None:
            return None, None
        key, planned = self._key("bn", bn.refs[0]())
        return key, (planned if isinstance(planned, Rectifier) else None)

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
            if entry.ref() is not None or entry.rewrite is calls.REFUSED or not calls.legal(key[0], one):
                plan.refuse(key)
                continue
            known = plan.rewrites.get(key)
            if known is None:
                plan.rewrites[key] = one
            elif not calls.same_consumer(known, one):
                plan.refuse(key)
