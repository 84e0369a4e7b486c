"""Which torch functions are rectifiers, and their parameters at a given call.

Every public spelling of a rectifier reaches a TorchFunctionMode as one of the functions below
(`nn.ReLU` calls F.relu, `nn.ReLU6` and `nn.Hardtanh` call F.hardtanh, `nn.LeakyReLU` calls
F.leaky_relu, `x.relu_()` is Tensor.relu_, ...). `parse(func, args, kwargs)` turns a call into a
`RectifierCall` (input tensor, lo, hi, slope, in place?) or None when the call is not a rectifier
(e.g. `torch.clamp(x, min=1e-6)`, which guards a denominator rather than gating a signal).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

INF = math.inf


@dataclass(frozen=True)
class RectifierCall:
    x: torch.Tensor
    lo: float
    hi: float
    slope: float
    inplace: bool
    form: str  # "relu", "relu6", "hardtanh", "clamp" or "leaky_relu"


def _arg(args, kwargs, index, name, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _relu(inplace_default):
    def parse(args, kwargs):
        return RectifierCall(args[0] if args else kwargs["input"], 0.0, INF, 0.0,
                             bool(_arg(args, kwargs, 1, "inplace", inplace_default)), "relu")
    return parse


def _relu_always_inplace(args, kwargs):
    return RectifierCall(args[0] if args else kwargs["input"], 0.0, INF, 0.0, True, "relu")


def _relu6(args, kwargs):
    return RectifierCall(args[0] if args else kwargs["input"], 0.0, 6.0, 0.0,
                         bool(_arg(args, kwargs, 1, "inplace", False)), "relu6")


def _hardtanh(inplace):
    def parse(args, kwargs):
        lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
        hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
        if not lo < hi:
            return None
        inp = inplace or bool(_arg(args, kwargs, 3, "inplace", False))
        form = "relu6" if (lo, hi) == (0.0, 6.0) else "hardtanh"
        return RectifierCall(args[0] if args else kwargs["input"], lo, hi, 0.0, inp, form)
    return parse


def _clamp(inplace, min_only=False):
    """clamp / clip / clamp_min: a rectifier only when min is the number 0 and max is None or > 0."""
    def parse(args, kwargs):
        lo = _arg(args, kwargs, 1, "min", None)
        hi = None if min_only else _arg(args, kwargs, 2, "max", None)
        if not isinstance(lo, Real) or isinstance(lo, bool) or lo != 0:
            return None
        if hi is not None and (not isinstance(hi, Real) or isinstance(hi, bool) or not hi > 0):
            return None
        return RectifierCall(args[0] if args else kwargs["input"], 0.0, INF if hi is None else float(hi), 0.0,
                             inplace, "clamp")
    return parse


def _leaky(inplace):
    def parse(args, kwargs):
        slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
        inp = inplace or bool(_arg(args, kwargs, 2, "inplace", False))
        return RectifierCall(args[0] if args else kwargs["input"], 0.0, INF, slope, inp, "leaky_relu")
    return parse


PARSERS = {
    F.relu: _relu(False), torch.relu: _relu(False), torch.Tensor.relu: _relu(False),
    torch.relu_: _relu_always_inplace, torch.Tensor.relu_: _relu_always_inplace,
    F.relu6: _relu6,
    F.hardtanh: _hardtanh(False), torch._C._nn.hardtanh: _hardtanh(False), F.hardtanh_: _hardtanh(True),
    torch.clamp: _clamp(False), torch.Tensor.clamp: _clamp(False), torch.clip: _clamp(False),
    torch.Tensor.clip: _clamp(False), torch.clamp_: _clamp(True), torch.Tensor.clamp_: _clamp(True),
    torch.clip_: _clamp(True), torch.Tensor.clip_: _clamp(True),
    torch.clamp_min: _clamp(False, min_only=True), torch.Tensor.clamp_min: _clamp(False, min_only=True),
    torch.clamp_min_: _clamp(True, min_only=True), torch.Tensor.clamp_min_: _clamp(True, min_only=True),
    F.leaky_relu: _leaky(False), torch._C._nn.leaky_relu: _leaky(False), F.leaky_relu_: _leaky(True),
}
if hasattr(torch._C._nn, "relu6"):
    PARSERS[torch._C._nn.relu6] = _relu6


def parse(func, args, kwargs) -> RectifierCall | None:
    parser = PARSERS.get(func)
    if parser is None or kwargs.get("out") is not None:  # out= writes elsewhere: torch runs it as usual
        return None
    try:
        call = parser(args, kwargs)
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # an unusual spelling: let torch itself run (and complain) as usual
    if call is None or not isinstance(call.x, torch.Tensor):
        return None
    return call


def apply_inplace(call: RectifierCall) -> torch.Tensor:
    """The plain rectifier (no rule: nothing needs its gradient), written into call.x."""
    if call.slope:
        return F.leaky_relu_(call.x, call.slope)
    return call.x.clamp_(min=call.lo, max=None if call.hi == INF else call.hi)


# Activations that are not piecewise linear: they get the plain gradient, with a warning
# (guided backprop / DeconvNet are defined only for rectifiers).
_NONLINEAR = {
    F.silu: "SiLU", F.gelu: "GELU", torch._C._nn.gelu: "GELU", F.elu: "ELU", F.selu: "SELU",
    F.celu: "CELU", F.softplus: "Softplus", torch._C._nn.softplus: "Softplus", F.mish: "Mish",
    F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid", torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid", torch.Tensor.sigmoid_: "sigmoid",
    torch.tanh: "tanh", torch.Tensor.tanh: "tanh", torch.tanh_: "tanh", torch.Tensor.tanh_: "tanh",
    F.logsigmoid: "LogSigmoid", F.softsign: "Softsign", F.prelu: "PReLU", F.rrelu: "RReLU",
    F.glu: "GLU", F.threshold: "Threshold", torch.threshold: "Threshold",
}


def nonlinear_name(func) -> str | None:
    """The activation's name when `func` is an activation with no rectifier rule, else None."""
    return _NONLINEAR.get(func)
