"""The torch-function mode that runs a forward pass whose backward propagates LRP relevance.

Inside `with RelevanceMode(...)` the tensor that flows backward is the relevance itself (Zennit's
convention), and each op the model calls gets the backward its rule gives:

- convolution / linear layer: the layer's rule (lrp_rules; chosen per call by `choose`), on the
  layer as canonized: an eval-mode batch norm that is its output's one consumer is merged into
  it (W' = W s, b' = (b - mean) s + beta, s = gamma / sqrt(var + eps); Zennit's
  SequentialMergeBatchNorm), whatever the model's spelling;
- a batch norm left on its own: `batch_norm_rule` (Zennit's composites: pass);
- rectifiers and other activations, however spelled (module, functional, in place): pass;
- the sum of two tensors in the graph (residual additions, in place or not) and average pooling
  (avg / adaptive-avg pools, mean over dimensions): Zennit's norm rule, each input's share
  proportional to its contribution, R_i = x_i * op^T(R / stab(z));
- a zero padding whose output a convolution reads (timm's "same" convolutions): part of that
  layer (AffineLayer.pre_pad), so input-replacing rules see the unpadded input, as in Zennit;
- anything else (max pooling, concatenation, reshapes, products): the plain gradient.

A convolution's output is held back until its first consumer shows whether a batch norm follows.
If a merged convolution's output is then used again, RelevanceMismatch names it; the caller
runs the pass again without that merge (`no_merge`). Parameters are read, never changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from . import rectifiers as _rectifiers
from .lrp_rules import CONVOLUTIONS, AffineLayer, Rule, check_bounds, ratio, relevance

_METADATA = frozenset({"__get__", "size", "dim", "ndimension", "numel", "is_contiguous", "stride", "__len__"})
_ADDS = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__})
_IN_PLACE_ADDS = frozenset({torch.Tensor.add_, torch.Tensor.__iadd__})
_AVG_POOLS = frozenset({F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                        F.adaptive_avg_pool3d, torch.avg_pool1d, torch._C._nn.avg_pool2d, torch._C._nn.avg_pool3d,
                        torch.mean, torch.Tensor.mean})
_IN_PLACE_ACTIVATIONS = frozenset({torch.sigmoid_, torch.Tensor.sigmoid_, torch.tanh_, torch.Tensor.tanh_})


class RelevanceMismatch(Exception):
    """A convolution merged with the batch norm after it had another consumer as well."""

    def __init__(self, key) -> None:
        super().__init__(f"the output of layer {key} feeds a batch norm and another op")
        self.key = key


@dataclass
class _Pending:
    """A convolution / linear output held back until its first consumer."""

    z: torch.Tensor
    a: torch.Tensor
    layer: AffineLayer
    first: bool
    key: tuple
    merged: bool = False


class _AffineNode(torch.autograd.Function):
    """Forward: the layer's (already computed) output; backward: the rule's relevance."""

    @staticmethod
    def forward(ctx, a, state):
        ctx.save_for_backward(a)
        ctx.state = state
        out, state.out = state.out, None
        return out

    @staticmethod
    def backward(ctx, r):
        (a,) = ctx.saved_tensors
        state = ctx.state
        return relevance(state.rule, state.layer, a.detach(), state.z, r, state.backend), None


@dataclass
class _AffineState:
    layer: AffineLayer
    rule: Rule
    z: torch.Tensor | None  # the output as the rule reads it (a copy: an in-place op may follow)
    out: torch.Tensor | None
    backend: str = "torch"


class _Pass(torch.autograd.Function):
    """An activation whose relevance passes unchanged (Zennit's pass rule)."""

    @staticmethod
    def forward(ctx, x, run):
        return run()

    @staticmethod
    def backward(ctx, r):
        return r, None


class _PassInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, run):
        ctx.mark_dirty(x)
        run()
        return x

    @staticmethod
    def backward(ctx, r):
        return r, None


class _Norm(torch.autograd.Function):
    """z = op(x_1, ...) linear (a sum, an average pool); backward: R_i = x_i * op^T_i(R / stab(z)).
    The backward recomputes z from the saved inputs (the same op on the same values: the same
    bits), so nothing activation-sized is kept beyond the inputs; an in-place sum keeps a copy of
    the input it overwrites."""

    @staticmethod
    def forward(ctx, stabilizer, backend, op, *xs):
        ctx.stabilizer, ctx.backend, ctx.op = stabilizer, backend, op
        ctx.overwritten = xs[0].detach().clone() if op.in_place else None
        ctx.save_for_backward(*(xs[1:] if op.in_place else xs))
        with torch.no_grad():
            z = op(*xs)
        if op.in_place:
            ctx.mark_dirty(xs[0])
        return z

    @staticmethod
    def backward(ctx, r):
        xs = ctx.saved_tensors
        if ctx.overwritten is not None:
            xs = (ctx.overwritten, *xs)
        leaves = [x.detach().requires_grad_(True) for x in xs]
        with torch.enable_grad():
            z = ctx.op.plain(*leaves)
        grads = torch.autograd.grad(z, leaves, ratio(r, z, None, ctx.stabilizer, ctx.backend))
        return (None, None, None, *(x * g for x, g in zip(xs, grads)))


@dataclass(frozen=True)
class _Op:
    """A linear op for _Norm: `plain` out of place (for its transpose), `in_place` on its first input."""

    plain: Callable
    in_place: bool = False

    def __call__(self, *xs):
        if self.in_place:
            return xs[0].add_(xs[1])
        return self.plain(*xs)


def _batch_norm_affine(args, kwargs):
    """An eval batch norm's call as (running mean, scale = gamma / sqrt(var + eps), beta), detached:
    y = (x - mean) * scale + beta."""
    mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
    gamma, beta = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
    eps = _arg(args, kwargs, 7, "eps", 1e-5)
    with torch.no_grad():
        scale = torch.rsqrt(var + eps) if gamma is None else gamma.detach() / (var + eps) ** 0.5
        return mean.detach(), scale, torch.zeros_like(mean) if beta is None else beta.detach()


def _precise_batch_norm(x: torch.Tensor, args, kwargs) -> torch.Tensor:
    """An eval batch norm of x, (x - mean) * scale + beta, with the scale carried in two floats.

    The relevance downstream of a merged batch norm reads the activations the forward gives. A
    float32 batch norm rounds each channel's scale once, which shifts a whole channel wherever the
    result is small against beta: LRP on EfficientNet-Lite0 erred 1.5-2.5x more than Zennit's
    float32 (whose forward runs the merged convolution). Here scale = hi + lo (both in x's dtype,
    lo the rounding hi leaves) and two fused multiply-adds (torch.addcmul) round at the end only."""
    mean, var = _arg(args, kwargs, 1, "running_mean"), _arg(args, kwargs, 2, "running_var")
    gamma, beta = _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
    eps = _arg(args, kwargs, 7, "eps", 1e-5)
    with torch.no_grad():
        exact = (torch.ones_like(var, dtype=torch.float64) if gamma is None else gamma.double()) \
            / (var.double() + eps).sqrt()
        hi = exact.to(x.dtype)
        lo = (exact - hi.double()).to(x.dtype)
        view = (1, -1) + (1,) * (x.dim() - 2)
        shift = torch.zeros_like(hi) if beta is None else beta.detach().to(x.dtype)
        d = x - mean.detach().to(x.dtype).reshape(view)
        return torch.addcmul(torch.addcmul(shift.reshape(view), d, lo.reshape(view)), d, hi.reshape(view))


def _in_graph(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()


def _arg(args, kwargs, index, name, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


class RelevanceMode(TorchFunctionMode):
    """Run a forward pass whose backward propagates relevance (see the module docstring).

    Args:
        choose: (module name or None, module or None, "conv" | "linear", first) -> the Rule for an
            affine layer call (`first`: the forward's first affine layer).
        layers: id(weight) -> (name, module) for the model's parametrized modules.
        merge_batch_norm: merge eval-mode batch norms into the layer before them.
        batch_norm_rule: the rule of a batch norm that is not merged: "pass" or an epsilon Rule
            (the batch norm as an affine layer of its own).
        sum_stabilizer: the norm rule's stabilizer at sums and average pools.
        no_merge: layer keys whose merge is refused (after a RelevanceMismatch).
        backend: the kernels' backend for the rules' elementwise ratio (featvis::lrp_ratio).
    """

    def __init__(self, choose, layers: dict, *, merge_batch_norm: bool, batch_norm_rule: Rule,
                 sum_stabilizer: float, no_merge: set, backend: str = "torch") -> None:
        super().__init__()
        self.backend = backend
        self.choose, self.layers = choose, layers
        self.merge_batch_norm, self.batch_norm_rule = merge_batch_norm, batch_norm_rule
        self.sum_stabilizer, self.no_merge = sum_stabilizer, no_merge
        self._pending: dict[int, _Pending] = {}
        self._calls: dict[int, int] = {}
        self._seen_affine = False
        self._pads: dict[int, tuple] = {}  # id(padded) -> (padded, unpadded, pad) for zero pads in the graph
        self.activations: list[str] = []  # activations met that are not rectifiers (they pass relevance too)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._pending and getattr(func, "__name__", "") not in _METADATA:
            merged = self._consume_pending(func, args, kwargs)
            if merged is not None:
                return merged
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in CONVOLUTIONS or func is F.linear:
            return self._affine(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(args, kwargs)
        call = _rectifiers.parse(func, args, kwargs)
        if call is not None or _rectifiers.nonlinear_name(func) is not None:
            return self._pass(func, args, kwargs, call)
        if func in _ADDS or func in _IN_PLACE_ADDS:
            return self._sum(func, args, kwargs)
        if func in _AVG_POOLS:
            return self._pool(func, args, kwargs)
        if func is F.pad:
            return self._zero_pad(args, kwargs)
        return func(*args, **kwargs)

    # -- convolution / linear -------------------------------------------------------------------

    def _affine(self, func, args, kwargs):
        a = _arg(args, kwargs, 0, "input")
        if not _in_graph(a):
            return func(*args, **kwargs)
        padded = self._pads.get(id(a))
        pre_pad = None
        if padded is not None and padded[0] is a and func is not F.linear:
            a, pre_pad = padded[1], padded[2]  # the padding joins the layer; relevance goes to the unpadded input
        weight, bias = _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        options = {}
        if func is not F.linear:
            for i, (name, default) in enumerate((("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))):
                options[name] = _arg(args, kwargs, 3 + i, name, default)
        layer = AffineLayer(func, weight.detach(), None if bias is None else bias.detach(), options, pre_pad)
        n = self._calls[id(weight)] = self._calls.get(id(weight), -1) + 1
        key = (id(weight), n)
        first, self._seen_affine = not self._seen_affine, True
        with torch.no_grad():
            z = layer(a, layer.weight, layer.bias)
        if self.merge_batch_norm and key not in self.no_merge and z.dim() >= 2:
            self._pending[id(z)] = _Pending(z, a, layer, first, key)
            return z
        return self._node(a, layer, self._rule(key, func, first), z)

    def _rule(self, key, func, first) -> Rule:
        name, module = self.layers.get(key[0], (None, None))
        return self.choose(name, module, "linear" if func is F.linear else "conv", first)

    def _node(self, a, layer: AffineLayer, rule: Rule, z: torch.Tensor) -> torch.Tensor:
        if rule.name == "zbox":
            check_bounds(rule, a)
        # what the rule reads of z, kept now (an in-place op may overwrite z): the gamma rule only its sign
        keep = (z.detach().sign().to(torch.int8) if rule.name == "gamma"
                else z.detach().clone() if rule.name in ("epsilon", "zbox") else None)
        return _AffineNode.apply(a, _AffineState(layer, rule, keep, z, self.backend))

    def _consume_pending(self, func, args, kwargs):
        """Merge a held-back output into the batch norm that consumes it (returned), or put every
        held-back argument into the graph as its plain layer (None returned)."""
        flat, _ = tree_flatten((args, kwargs))
        for t in flat:
            p = self._pending.get(id(t)) if isinstance(t, torch.Tensor) else None
            if p is None or p.z is not t:
                continue
            if p.merged:
                raise RelevanceMismatch(p.key)
            bn_input = func is F.batch_norm and _arg(args, kwargs, 0, "input") is t
            if bn_input and not _arg(args, kwargs, 5, "training", False) and torch.is_grad_enabled():
                p.merged = True
                return self._merged(p, args, kwargs)
            del self._pending[id(t)]
            self._node(p.a, p.layer, self._rule(p.key, p.layer.func, p.first), p.z)  # t itself enters the graph
        return None

    def _merged(self, p: _Pending, args, kwargs):
        mean, scale, beta = _batch_norm_affine(args, kwargs)
        layer = p.layer
        with torch.no_grad():
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            bias = layer.bias if layer.bias is not None else torch.zeros_like(mean)
            merged = AffineLayer(layer.func, layer.weight * scale.reshape(shape), (bias - mean) * scale + beta,
                                 layer.options, layer.pre_pad)
            z = _precise_batch_norm(p.z.detach(), args, kwargs)
        return self._node(p.a, merged, self._rule(p.key, layer.func, p.first), z)

    # -- batch norm on its own, activations, sums, pools -----------------------------------------

    def _batch_norm(self, args, kwargs):
        x = _arg(args, kwargs, 0, "input")
        if not _in_graph(x) or _arg(args, kwargs, 5, "training", False):
            return F.batch_norm(*args, **kwargs)
        if self.batch_norm_rule.name == "pass":
            return _Pass.apply(x, lambda: F.batch_norm(x.detach(), *args[1:], **kwargs))
        mean, scale, beta = _batch_norm_affine(args, kwargs)
        shift = -mean * scale + beta
        channels = x.shape[1]
        # the batch norm as a 1x1 depthwise convolution (a linear layer for 2-D inputs)
        if x.dim() == 2:
            layer = AffineLayer(F.linear, torch.diag(scale), shift)
        else:
            conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
            layer = AffineLayer(conv, scale.reshape(channels, 1, *([1] * (x.dim() - 2))), shift,
                                {"stride": 1, "padding": 0, "dilation": 1, "groups": channels})
        with torch.no_grad():
            z = F.batch_norm(x.detach(), *args[1:], **kwargs)
        return self._node(x, layer, self.batch_norm_rule, z)

    def _pass(self, func, args, kwargs, call):
        x = call.x if call is not None else _arg(args, kwargs, 0, "input")
        if not _in_graph(x):
            return func(*args, **kwargs)
        if call is None:
            self.activations.append(_rectifiers.nonlinear_name(func))
        in_place = (call.inplace if call is not None else func in _IN_PLACE_ACTIVATIONS
                    or bool(kwargs.get("inplace", False)))
        if in_place:
            return _PassInPlace.apply(x, lambda: func(*args, **kwargs))
        return _Pass.apply(x, lambda: func(*args, **kwargs))

    def _sum(self, func, args, kwargs):
        x, y = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other")
        alpha = kwargs.get("alpha", 1)
        if not (_in_graph(x) and _in_graph(y)) or x.shape != y.shape or alpha != 1 or "out" in kwargs:
            return func(*args, **kwargs)
        op = _Op(torch.add, in_place=func in _IN_PLACE_ADDS)
        return _Norm.apply(self.sum_stabilizer, self.backend, op, x, y)

    def _zero_pad(self, args, kwargs):
        x, pad = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "pad")
        out = F.pad(*args, **kwargs)
        mode, value = _arg(args, kwargs, 2, "mode", "constant"), _arg(args, kwargs, 3, "value", None)
        if _in_graph(x) and mode == "constant" and not value and all(int(p) >= 0 for p in pad) \
                and len(pad) <= 2 * (x.dim() - 2):
            self._pads[id(out)] = (out, x, tuple(int(p) for p in pad))
        return out

    def _pool(self, func, args, kwargs):
        x = _arg(args, kwargs, 0, "input")
        if func in (torch.mean, torch.Tensor.mean) and _arg(args, kwargs, 1, "dim") is None:
            return func(*args, **kwargs)  # a mean over everything is a score, not a pooling layer
        if not _in_graph(x):
            return func(*args, **kwargs)
        rest = args[1:]
        return _Norm.apply(self.sum_stabilizer, self.backend, _Op(lambda t: func(t, *rest, **kwargs)), x)
