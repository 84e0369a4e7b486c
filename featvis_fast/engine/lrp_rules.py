"""LRP rules in relevance form, as Zennit 0.5 defines them, for one affine layer.

A rule maps the relevance R_z at an affine layer's output z = f(a; W, b) (a convolution or a
linear layer) to the relevance at its input, R_a. With f^T(s; V) the transpose of f with weights
V applied to s (the input gradient of f), a+ = max(a, 0), a- = min(a, 0), W+ = max(W, 0),
W- = min(W, 0), and stab(z) = z + e * sign(z) (sign(0) = +1):

epsilon    R_a = a * f^T(R_z / stab(z); W)                                    (Bach et al. 2015)
zplus      z+ = f(a+; W+, b+) + f(a-; W-, 0),
           R_a = a+ * f^T(s; W+) + a- * f^T(s; W-), s = R_z / stab(z+)       (Montavon et al. 2017)
alphabeta  alpha * (the z-plus terms) - beta * (the same with W+ and W- swapped, b-)  (Bach et al. 2015)
gamma      W + gamma W+ for the positive part of z and W + gamma W- for the negative part, each
           share of R_z going where z has that sign (Montavon et al. 2019; Zennit's generalized form)
zbox       z = f(a; W, b) - f(l; W+, b+) - f(h; W-, b-) with the input bounds l <= a <= h,
           R_a = a * f^T(s; W) - l * f^T(s; W+) - h * f^T(s; W-)             (Montavon et al. 2017)
flat       R_a = f^T(R_z / stab(f(1; 1, 0)); 1)                           (Lapuschkin et al. 2019)
wsquare    R_a = f^T(R_z / stab(f(1; W^2, b^2)); W^2)                          (Montavon et al. 2017)
pass       R_a = R_z
excitation R_a = a * f^T(R_z / (f(a; W+, 0) + stabilizer); W+), the input as it is (excitation
           backprop, Zhang et al. 2016, as TorchRay computes it; `negate`: with -W, for the
           contrastive pass)

Zennit's parameter modifiers are followed exactly: the bias enters the modified forward of the
first (positive) term and is zeroed in the terms on negative inputs. `epsilon` is the stabilizer
of the epsilon rule, `stabilizer` that of every other rule (Zennit's defaults: both 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..ops import lrp as _ops

CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d)
RULES = ("epsilon", "zplus", "alphabeta", "gamma", "zbox", "flat", "wsquare", "pass", "excitation")


def ratio(r: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor | None, eps: float, backend: str) -> torch.Tensor:
    """r / stabilize(z1 + z2, eps), stabilize(z) = z + eps * sign(z) with sign(0) = +1 (Zennit's
    stabilizer), in one pass (featvis::lrp_ratio)."""
    return _ops.lrp_ratio(r.detach(), z1.detach(), None if z2 is None else z2.detach(), eps, backend)


@dataclass(frozen=True)
class Rule:
    """One LRP rule and its parameters (see the module docstring).

    Args:
        name: one of RULES.
        epsilon: the epsilon rule's stabilizer.
        stabilizer: every other rule's stabilizer.
        gamma: the gamma rule's gamma.
        alpha, beta: the alpha-beta rule's weights (alpha - beta = 1, both >= 0).
        low, high: the z-box rule's input bounds (numbers or tensors broadcastable to the input).
        negate: the excitation rule with the layer's weights negated.
    """

    name: str
    epsilon: float = 1e-6
    stabilizer: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0
    beta: float = 1.0
    low: object = None
    high: object = None
    negate: bool = False


@dataclass
class AffineLayer:
    """z = func(pad(a), weight, bias, **options): a convolution or F.linear, parameters detached.

    pre_pad: a zero padding (F.pad's spatial tuple) the model applies to the layer's input before
    the convolution (timm's "same" convolutions): it belongs to the layer, so the rules that
    replace the input (flat, w-square, z-box) replace the unpadded input and pad that with zeros,
    as Zennit's hooks on such a module do."""

    func: Callable
    weight: torch.Tensor
    bias: torch.Tensor | None
    options: dict = field(default_factory=dict)
    pre_pad: tuple | None = None

    def __call__(self, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.pre_pad is not None:
            a = F.pad(a, self.pre_pad)
        return self.func(a, weight, bias, **self.options)


def _positive(t):
    return None if t is None else t.clamp(min=0)


def _negative(t):
    return None if t is None else t.clamp(max=0)


def _bound(value, a: torch.Tensor) -> torch.Tensor:
    """A z-box bound as a tensor shaped like a (a number, or a tensor broadcastable to it, whose
    batch may be longer: Zennit cuts it)."""
    t = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    if t.dim() == a.dim() and t.shape[0] > a.shape[0]:
        t = t[:a.shape[0]]
    return t.expand_as(a)


def check_bounds(rule: Rule, a: torch.Tensor) -> None:
    """ValueError unless low <= a <= high everywhere (the z-box rule's premise)."""
    low, high = _bound(rule.low, a), _bound(rule.high, a)
    if bool((a < low).any()) or bool((a > high).any()):
        raise ValueError(f"the z-box bounds do not contain the layer's input: it ranges over "
                         f"[{a.min().item():.4g}, {a.max().item():.4g}], below low or above high somewhere")


def _terms(layer: AffineLayer, pairs):
    """Run the modified forwards f(input_i; W_i, b_i) with autograd, and return
    (the outputs, a function giving the gradients with respect to each input for output gradients)."""
    inputs = [x.detach().requires_grad_(True) for x, _, _ in pairs]
    with torch.enable_grad():
        outputs = [layer(x, w, b) for x, (_, w, b) in zip(inputs, pairs)]

    def gradients(grad_outputs):
        return torch.autograd.grad(outputs, inputs, grad_outputs)

    return outputs, gradients


def relevance(rule: Rule, layer: AffineLayer, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
              backend: str = "torch") -> torch.Tensor:
    """The relevance at the layer's input for relevance `r` at its output.

    Args:
        rule: the rule.
        layer: the layer (its weight and bias already canonized, e.g. batch norm merged in).
        a: the layer's input (N, ...), detached.
        z: the layer's output f(a; W, b) (N, ...), detached (for the gamma rule its sign suffices).
        r: the relevance at the output, shaped like z.
        backend: the kernels' backend for the elementwise ratio (featvis::lrp_ratio).

    Returns:
        The relevance at the input, shaped like a.
    """
    w, b = layer.weight, layer.bias
    name = rule.name
    if name == "pass":
        return r
    if name == "excitation":
        w_plus = (-w if rule.negate else w).clamp(min=0)
        s = r / (layer(a, w_plus, None) + rule.stabilizer)
        return a * _transpose(layer, a, w_plus, s)
    if name == "epsilon":
        s = ratio(r, z, None, rule.epsilon, backend)
        return a * _transpose(layer, a, w, s)
    if name in ("flat", "wsquare"):
        ones = torch.ones_like(a)
        weight, bias = (torch.ones_like(w), None) if name == "flat" else (w * w, None if b is None else b * b)
        outputs, grads = _terms(layer, [(ones, weight, bias)])
        (g,) = grads([ratio(r, outputs[0], None, rule.stabilizer, backend)])
        return g
    if name == "zbox":
        low, high = _bound(rule.low, a), _bound(rule.high, a)
        outputs, grads = _terms(layer, [(low, _positive(w), _positive(b)), (high, _negative(w), _negative(b))])
        s = ratio(r, z - outputs[0], -outputs[1], rule.stabilizer, backend)
        g_low, g_high = grads([s, s])
        return a * _transpose(layer, a, w, s) - low * g_low - high * g_high
    # a rectifier's output is its own positive part: no copies then, and no negative terms
    has_negative = a.numel() > 0 and bool(a.amin() < 0)  # one reduction, no boolean copy of a
    ap, an = (a.clamp(min=0), a.clamp(max=0)) if has_negative else (a, None)
    if name == "zplus":
        return _signed_share(layer, ap, an, has_negative, (_positive(w), _positive(b)), _negative(w), r,
                             rule.stabilizer, backend)
    if name == "alphabeta":
        positive = _signed_share(layer, ap, an, has_negative, (_positive(w), _positive(b)), _negative(w), r,
                                 rule.stabilizer, backend)
        negative = _signed_share(layer, ap, an, has_negative, (_negative(w), _negative(b)), _positive(w), r,
                                 rule.stabilizer, backend)
        return rule.alpha * positive - rule.beta * negative
    if name == "gamma":
        g = rule.gamma
        w_up, w_down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        up = _signed_share(layer, ap, an, has_negative, (w_up, b_up), w_down, r * (z > 0), rule.stabilizer, backend)
        down = _signed_share(layer, ap, an, has_negative, (w_down, b_down), w_up, r * (z < 0), rule.stabilizer,
                             backend)
        return up + down
    raise ValueError(f"unknown LRP rule {name!r}; expected one of {RULES}")


def _signed_share(layer, ap, an, has_negative, first, second_weight, r, stabilizer, backend):
    """a+ * f^T(s; W1) + a- * f^T(s; W2), s = r / stab(f(a+; W1, b1) + f(a-; W2, 0)).
    Without negative inputs the a- term is exactly zero and is skipped."""
    w1, b1 = first
    pairs = [(ap, w1, b1)] + ([(an, second_weight, None)] if has_negative else [])
    outputs, grads = _terms(layer, pairs)
    s = ratio(r, outputs[0], outputs[1] if len(outputs) > 1 else None, stabilizer, backend)
    g = grads([s] * len(pairs))
    share = ap * g[0]
    return share + an * g[1] if has_negative else share


def _transpose(layer: AffineLayer, a: torch.Tensor, weight: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """f^T(s; weight): the input gradient of f at weight for output gradient s, shaped like a."""
    if layer.func is F.linear:
        return s.matmul(weight)
    padding = layer.options.get("padding", 0)
    if not isinstance(padding, str):
        dims = weight.dim() - 2
        as_list = (lambda v: list(v) if isinstance(v, (tuple, list)) else [v] * dims)
        padded = a if layer.pre_pad is None else F.pad(a, layer.pre_pad)
        g = torch.ops.aten.convolution_backward(
            s, padded, weight, None, as_list(layer.options.get("stride", 1)), as_list(padding),
            as_list(layer.options.get("dilation", 1)), False, [0] * dims, layer.options.get("groups", 1),
            [True, False, False])[0]
        return g if layer.pre_pad is None else F.pad(g, [-p for p in layer.pre_pad])  # crop the padding off
    _, grads = _terms(layer, [(a, weight, None)])
    return grads([s])[0]
