"""Layer-wise relevance propagation: FeatureVis' LRP-epsilon and Zennit's rules and composites.

composite            convolutions           linear layers   first layer      batch norm
"epsilon"            epsilon(eps)           epsilon(eps)    -                its own epsilon layer
"epsilon-plus"       z-plus                 epsilon(eps)    -                merged
"epsilon-plus-flat"  z-plus                 epsilon(eps)    flat             merged
"epsilon-gamma-box"  gamma(gamma)           epsilon(eps)    z-box(low, high) merged
"epsilon-alpha2-beta1"       alpha-beta(2, 1)  epsilon(eps) -               merged
"epsilon-alpha2-beta1-flat"  alpha-beta(2, 1)  epsilon(eps) flat            merged

"epsilon" is FeatureVis' LRP-epsilon (Bach et al. 2015 with eps * sign(z); default eps 1e-3),
run by the rectifier-rule engine; the others are Zennit 0.5's composites of the same names
(Montavon et al. 2019, Kohlbrenner et al. 2020; default eps and stabilizer 1e-6), run by
engine.relevance_mode: activations pass relevance, residual sums and average pools split it by
the norm rule, eval batch norms are merged into the layer before them (Zennit's canonizers),
whatever the model's spelling. `rules=` gives a rule per module name or type on top of either.
"""
from __future__ import annotations

import warnings
import weakref

import torch
import torch.nn as nn

from .. import _backend
from .. import _rectifier_reference as ref
from .._validate import check_model_and_batch
from ..engine import NonPiecewiseLinearWarning, Target
from ..engine.lrp_rules import RULES, Rule
from ..engine.relevance_mode import RelevanceMismatch, RelevanceMode
from .methods import _attribute, _forward_selected, _in_best_layout

COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1",
              "epsilon-alpha2-beta1-flat")
RULE_NAMES = (*RULES, "norm")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NO_MERGE: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()


def _number(name: str, value, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_rule(spec, *, eps: float, stabilizer: float) -> Rule:
    """A rule from its spelling: a name ("zplus"), or a tuple of the name and its parameters:
    ("epsilon", eps), ("gamma", gamma), ("alphabeta", alpha, beta), ("zbox", low, high),
    ("flat",), ("wsquare",), ("pass",), ("norm",) (the epsilon rule with the stabilizer)."""
    name, *params = (spec,) if isinstance(spec, str) else tuple(spec) if isinstance(spec, (tuple, list)) else (None,)
    if name not in RULE_NAMES:
        raise ValueError(f"unknown LRP rule {spec!r}; rules are {', '.join(RULE_NAMES)} "
                         "(a name, or a tuple of the name and its parameters)")
    expected = {"epsilon": 1, "gamma": 1, "alphabeta": 2, "zbox": 2}.get(name, 0)
    if len(params) not in ((0, expected) if name != "zbox" else (expected,)):
        raise ValueError(f"rule {name!r} takes {expected} parameter(s), got {spec!r}")
    if name == "norm":
        return Rule("epsilon", epsilon=stabilizer)
    if name == "epsilon":
        return Rule("epsilon", epsilon=_number("epsilon", params[0]) if params else eps)
    if name == "gamma":
        return Rule("gamma", stabilizer=stabilizer, gamma=_number("gamma", params[0]) if params else 0.25)
    if name == "alphabeta":
        alpha, beta = (_number("alpha", params[0]), _number("beta", params[1])) if params else (2.0, 1.0)
        if alpha - beta != 1:
            raise ValueError(f"alpha - beta must be 1, got alpha={alpha:g}, beta={beta:g}")
        return Rule("alphabeta", stabilizer=stabilizer, alpha=alpha, beta=beta)
    if name == "zbox":
        return _zbox(params[0], params[1], stabilizer)
    return Rule(name, stabilizer=stabilizer)


def _zbox(low, high, stabilizer: float) -> Rule:
    for side, bound in (("low", low), ("high", high)):
        if bound is None or not isinstance(bound, (int, float, torch.Tensor)) or isinstance(bound, bool):
            raise ValueError(f"the z-box rule needs {side}= (a number or a tensor broadcastable to the input), "
                             f"got {bound!r}")
    if bool((torch.as_tensor(low) > torch.as_tensor(high)).any()):
        raise ValueError("the z-box bounds have low > high somewhere")
    return Rule("zbox", stabilizer=stabilizer, low=low, high=high)


class _Chooser:
    """The rule for each affine layer: `rules` by module name, then by module type, then the composite."""

    def __init__(self, model: nn.Module, composite: str, rules, *, eps, stabilizer, gamma, low, high) -> None:
        modules = dict(model.named_modules())
        self.by_name, self.by_type = {}, []
        for key, spec in (rules or {}).items():
            rule = parse_rule(spec, eps=eps, stabilizer=stabilizer)
            if isinstance(key, str):
                if key not in modules:
                    raise ValueError(f"rules names {key!r}, but the model has no module of that name")
                if not isinstance(modules[key], (*_CONV_TYPES, nn.Linear)):
                    raise ValueError(f"rules names {key!r}, a {type(modules[key]).__name__}; rules apply to "
                                     "convolution and linear layers")
                self.by_name[key] = rule
            elif isinstance(key, type) and issubclass(key, nn.Module):
                self.by_type.append((key, rule))
            else:
                raise TypeError(f"rules keys are module names or nn.Module types, got {key!r}")
        linear = Rule("epsilon", epsilon=eps)
        plus = Rule("zplus", stabilizer=stabilizer)
        alpha_beta = Rule("alphabeta", stabilizer=stabilizer)
        self.conv = {"epsilon": linear, "epsilon-plus": plus, "epsilon-plus-flat": plus,
                     "epsilon-gamma-box": Rule("gamma", stabilizer=stabilizer, gamma=gamma),
                     "epsilon-alpha2-beta1": alpha_beta, "epsilon-alpha2-beta1-flat": alpha_beta}[composite]
        self.linear = linear
        self.first = None  # Zennit's first map: (the layer kinds it applies to, its rule)
        if composite.endswith("-flat"):
            self.first = (("conv", "linear"), Rule("flat", stabilizer=stabilizer))
        elif composite == "epsilon-gamma-box":
            self.first = (("conv",), _zbox(low, high, stabilizer))
        self.first_done = False

    def __call__(self, name, module, kind: str, first: bool) -> Rule:
        if name in self.by_name:
            return self.by_name[name]
        for cls, rule in self.by_type:
            if isinstance(module, cls) if module is not None else (
                    issubclass(cls, _CONV_TYPES) if kind == "conv" else issubclass(cls, nn.Linear)):
                return rule
        if self.first is not None and not self.first_done and kind in self.first[0]:
            self.first_done = True  # Zennit's first map: the first layer of these kinds
            return self.first[1]
        return self.conv if kind == "conv" else self.linear


def _relevance(model: nn.Module, x: torch.Tensor, target: Target, make_mode, nonlinear: str) -> torch.Tensor:
    """The relevance at x: the target's activation enters, the mode's rules carry it back."""
    no_merge = _NO_MERGE.setdefault(model, set())

    def run(laid_out):
        leaf = laid_out.requires_grad_(True)
        for _ in range(64):  # each rerun refuses one more merge
            mode = make_mode(no_merge)
            try:
                with torch.enable_grad():
                    with mode:
                        selected = _forward_selected(model, leaf, target)
                    if not selected.requires_grad:
                        raise ValueError("lrp: the target does not depend on x")
                    (r,) = torch.autograd.grad(selected, leaf, selected.detach())
            except RelevanceMismatch as mismatch:
                no_merge.add(mismatch.key)
                continue
            _report_activations(mode.activations, nonlinear)
            return r.contiguous()
        raise RuntimeError("lrp: too many batch-norm merges refused")

    return _in_best_layout(run, x)


def _report_activations(names, nonlinear: str) -> None:
    if not names or nonlinear == "ignore":
        return
    listed = ", ".join(sorted(set(names)))
    if nonlinear == "error":
        raise ValueError(f"lrp: activations that are not rectifiers ({listed}) met with nonlinear='error'")
    warnings.warn(f"lrp: activations that are not rectifiers ({listed}) got the pass rule",
                  NonPiecewiseLinearWarning, stacklevel=4)


def lrp(model: nn.Module, x: torch.Tensor, target: Target = None, *, composite: str = "epsilon",
        rules: dict | None = None, eps: float | None = None, gamma: float = 0.25, stabilizer: float = 1e-6,
        low: float | torch.Tensor | None = None, high: float | torch.Tensor | None = None,
        nonlinear: str = "warn", backend: str | None = None) -> torch.Tensor:
    """Layer-wise relevance propagation: the relevance at the input pixels (Bach et al. 2015).

    The relevance that enters is the target's activation. See the module docstring for what each
    composite applies where, and docs: LRP for the rules' formulas.

    Args:
        model: the CNN (eval mode; it is not modified).
        x: inputs (B, C, H, W), float32 or float64.
        target: what is explained, a featvis_fast.Target (None: the predicted class per sample).
        composite: one of COMPOSITES.
        rules: rules per layer on top of the composite: {module name or nn.Module type: rule}, a
            rule being a name or a tuple of the name and its parameters (see parse_rule), e.g.
            {"features.0": ("zbox", -3.0, 3.0), nn.Conv2d: ("gamma", 0.25)}. Names win over types.
        eps: the epsilon rule's eps (None: 1e-3 for "epsilon", FeatureVis'; 1e-6 otherwise, Zennit's).
        gamma: the gamma rule's gamma ("epsilon-gamma-box").
        stabilizer: every other rule's stabilizer (z-plus, alpha-beta, gamma, z-box, flat, the
            norm rule at sums and average pools).
        low: the z-box rule's lower input bound ("epsilon-gamma-box"; a number or a tensor
            broadcastable to x, e.g. (1, 3, 1, 1) per channel); low <= x everywhere.
        high: the z-box rule's upper input bound, likewise; x <= high everywhere.
        nonlinear: "warn", "error" or "ignore" on an activation that is not a rectifier (it
            passes relevance as a rectifier does).
        backend: kernel backend (None: the fastest for x's device): the rectifier kernels of
            composite "epsilon" without rules, the elementwise ratio (featvis::lrp_ratio) otherwise.

    Returns:
        the relevance at the input, shaped like x, in x's dtype.
    """
    if composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; composites are {', '.join(COMPOSITES)}")
    if nonlinear not in ("warn", "error", "ignore"):
        raise ValueError(f"nonlinear must be 'warn', 'error' or 'ignore', got {nonlinear!r}")
    eps = _number("eps", (1e-3 if composite == "epsilon" else 1e-6) if eps is None else eps)
    stabilizer, gamma = _number("stabilizer", stabilizer), _number("gamma", gamma)
    if rules is not None and not isinstance(rules, dict):
        raise TypeError(f"rules must be a dict {{module name or type: rule}}, got {type(rules).__name__}")
    check_model_and_batch(model, x)
    if composite == "epsilon" and not rules:
        grad = _attribute(model, x, target, ref.BACKPROP, grad_seed="onehot", backend=backend,
                          nonlinear=nonlinear, method="lrp", lrp_eps=eps)
        return x.detach() * grad
    chooser_args = dict(eps=eps, stabilizer=stabilizer, gamma=gamma, low=low, high=high)
    _Chooser(model, composite, rules, **chooser_args)  # bad rules fail here, before any forward
    layers = {id(m.weight): (name, m) for name, m in model.named_modules()
              if isinstance(getattr(m, "weight", None), torch.Tensor)}
    featurevis = composite == "epsilon"
    tiny = torch.finfo(x.dtype).tiny if x.is_floating_point() else 0.0
    chosen = _backend.resolve_backend(backend, x.device)

    def make_mode(no_merge):
        return RelevanceMode(_Chooser(model, composite, rules, **chooser_args), layers,
                             merge_batch_norm=not featurevis,
                             batch_norm_rule=Rule("epsilon", epsilon=eps) if featurevis else Rule("pass"),
                             sum_stabilizer=tiny if featurevis else stabilizer, no_merge=no_merge,
                             backend=chosen)

    return _relevance(model, x, target, make_mode, nonlinear).to(x.dtype)
