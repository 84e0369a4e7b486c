"""The TorchFunctionMode that applies a backward rule to every rectifier a forward pass executes.

It sits at the torch-function level, so it sees each call however the model makes it (module,
functional, Tensor method, in place, a module reused many times) and never touches the model:
leaving the `with` block, also through an exception, leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import _rectifier_reference as ref
from ..ops import _layout
from ..ops import rectifier as rectifier_ops
from . import fast_pad as _fast_pad
from . import lean as _lean
from . import rectifiers as _rectifiers
from . import rewrites as _rewrites
from .lrp_epsilon import LINEAR_FUNCS, epsilon_ratio

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class NonPiecewiseLinearWarning(UserWarning):
    """A forward pass ran an activation with no rectifier rule (SiLU, GELU, ...): it got the plain gradient."""


class RectifierRuleMode(TorchFunctionMode):
    """Inside `with RectifierRuleMode(rule, backend):` every rectifier call is replaced by the fused
    op that saves a bit-packed mask and backpropagates with `rule` (ref.BACKPROP / DECONVNET / GUIDED).

    lean: detach parameters and use the input-gradient-only conv / linear / batch-norm functions
    (see lean). lrp_eps: LRP-epsilon on linear layers (see lrp_epsilon). nonlinear: what to do on an
    activation without a rule: "warn" (plain gradient + NonPiecewiseLinearWarning), "error", "ignore".
    rewrites: this call's forward rewrites (batch norm folded, rectifiers in place; see rewrites), or None.
    `counts` tallies the rectifier calls that were handled, by form.
    """

    def __init__(self, rule: int, backend: str, *, lean: bool = True, lrp_eps: float | None = None,
                 nonlinear: str = "warn", rewrites: _rewrites.ForwardRewrites | None = None) -> None:
        super().__init__()
        if nonlinear not in ("warn", "error", "ignore"):
            raise ValueError(f"nonlinear must be 'warn', 'error' or 'ignore', got {nonlinear!r}")
        self.rule, self.backend, self.lean, self.lrp_eps, self.nonlinear = rule, backend, lean, lrp_eps, nonlinear
        self.rewrites = rewrites
        self.counts: Counter[str] = Counter()
        self.nonlinear_seen: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rewrites = self.rewrites
        if rewrites is None:
            return self._call(func, args, kwargs)
        out, args, kwargs, note = rewrites.before(func, args, kwargs)
        if out is NotImplemented:
            out = self._call(func, args, kwargs, inplace=note is not None and note.inplace)
        return rewrites.after(out, note)

    def _call(self, func, args, kwargs, inplace: bool = False):
        call = _rectifiers.parse(func, args, kwargs)
        if call is not None and inplace and not call.inplace and call.x.stride() == _layout.fresh_strides(call.x):
            # the rectifier is its input's only consumer (see rewrites); written in place only
            # where its output keeps the strides a fresh one would have (a (B, C, 1, 1) map with
            # channels-last strides would reach the next convolution differently laid out)
            call = dataclasses.replace(call, inplace=True)
        if call is not None and self._differentiable(call.x):
            self.counts[call.form] += 1
            return self._rectify(call)
        if call is not None and inplace and call.inplace:
            return _rectifiers.apply_inplace(call)
        name = _rectifiers.nonlinear_name(func)
        if name is not None:
            self._saw_nonlinear(name)
        if self.lean and getattr(func, "__name__", "") not in ("__get__", "__set__"):
            args, kwargs = _detach_parameters(args, kwargs)
        if func is F.pad:
            out = _fast_pad.zero_pad(args, kwargs)
            if out is not NotImplemented:
                return out
        eps = self.lrp_eps if func in LINEAR_FUNCS else None
        out = _lean.lean_call(func, args, kwargs, eps, inplace=inplace) if self.lean else NotImplemented
        if out is not NotImplemented:
            return out
        if inplace and func is F.batch_norm:  # a batch norm the rewrites let write into its input
            x = args[0] if args else kwargs["input"]
            if not (torch.is_grad_enabled() and x.requires_grad) and _lean.batch_norm_into(x, args, kwargs):
                return x
        out = func(*args, **kwargs)
        if eps is not None and isinstance(out, torch.Tensor):
            out = epsilon_ratio(out, eps)
        return out

    @staticmethod
    def _differentiable(x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and x.requires_grad and x.dtype in _FLOAT_DTYPES

    def _rectify(self, c: _rectifiers.RectifierCall) -> torch.Tensor:
        x = c.x
        if c.inplace:
            if x._base is None and (x.is_contiguous() or rectifier_ops.channels_last(x)):
                return rectifier_ops.rectify_inplace(x, c.lo, c.hi, c.slope, self.rule, self.backend)
            # a view or a strided tensor: compute out of place, then write back as torch would
            return x.copy_(rectifier_ops.rectify(x, c.lo, c.hi, c.slope, self.rule, self.backend)[0])
        return rectifier_ops.rectify(x, c.lo, c.hi, c.slope, self.rule, self.backend)[0]

    def _saw_nonlinear(self, name: str) -> None:
        if self.rule == ref.BACKPROP and self.lrp_eps is None:
            return  # the plain gradient is exact for any activation
        self.nonlinear_seen[name] += 1
        if self.nonlinear == "error":
            raise ValueError(f"the model runs {name}, which is not piecewise linear: no "
                             f"{_RULE_NAMES[self.rule]} rule exists for it (nonlinear='warn' uses its plain gradient)")

    def warn_nonlinear(self, method: str) -> None:
        """One warning per attribution call naming each non-piecewise-linear activation met."""
        if self.nonlinear_seen and self.nonlinear == "warn":
            names = ", ".join(f"{n} (x{k})" for n, k in self.nonlinear_seen.items())
            warnings.warn(f"{method}: the model runs activations that are not piecewise linear: {names}; "
                          "they get the plain gradient (no rectifier rule exists for them)",
                          NonPiecewiseLinearWarning, stacklevel=3)


_RULE_NAMES = {ref.BACKPROP: "backprop", ref.DECONVNET: "DeconvNet", ref.GUIDED: "guided-backprop"}


def _detach_parameters(args, kwargs):
    """Parameters enter compute functions detached: attribution needs no parameter gradients.
    (type() checks: isinstance(x, Parameter) goes through a slow metaclass hook.)"""
    if not any(type(a) is _PARAMETER for a in args) and not any(type(v) is _PARAMETER for v in kwargs.values()):
        return args, kwargs
    args = tuple(a.detach() if type(a) is _PARAMETER else a for a in args)
    kwargs = {k: v.detach() if type(v) is _PARAMETER else v for k, v in kwargs.items()}
    return args, kwargs


_PARAMETER = torch.nn.Parameter
