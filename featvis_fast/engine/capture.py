"""Capturing layer outputs: find a layer by name, hook its output, and stop the forward pass
once everything asked for is captured (the rest of the model never runs)."""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch


class StopForward(Exception):
    """Raised from a hook once every requested output is captured."""


def find_module(model: torch.nn.Module, name: str | torch.nn.Module) -> torch.nn.Module:
    """The submodule called `name` (a module object of the model is accepted too, as in Captum);
    an unknown name raises ValueError with the closest names."""
    if isinstance(name, torch.nn.Module):
        if not any(m is name for m in model.modules()):
            raise ValueError(f"the layer {type(name).__name__} given as a module is not part of the model")
        return name
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not name or name not in modules:
        close = difflib.get_close_matches(str(name), [n for n in modules if n], n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; see featvis_fast.layer_names(model)"
        raise ValueError(f"unknown layer name {name!r}{hint}")
    return modules[name]


def _resolve_modules(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
    return {name: find_module(model, name) for name in layers}


def extract(model: torch.nn.Module, x: torch.Tensor, layer: str | Sequence[str], call: int = 0,
            grad: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """The output of one layer, or of several, on input x.

    The forward pass stops right after the last requested output is captured (with call=-1 it
    must run to the end). Outputs are cloned unless the pass stops right there, so a later
    in-place op cannot change them.

    Args:
        model: the network.
        x: its input, e.g. (B, C, H, W).
        layer: a module name or a list of them (see featvis_fast.layer_names).
        call: which call of a module the forward runs several times (EfficientNet's shared
            activations): 0 the first, k the k-th (0-based), -1 the last.
        grad: keep the autograd graph (False runs under torch.no_grad()).

    Returns:
        the layer's output, e.g. (B, C, h, w), or {name: output} for a list of names.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
    if not isinstance(call, int) or call < -1:
        raise ValueError(f"call must be an int >= 0, or -1 for the last call, got {call!r}")
    names = [layer] if isinstance(layer, str) else list(dict.fromkeys(layer))
    if not names:
        raise ValueError("no layer requested")
    modules = _resolve_modules(model, names)
    counts = dict.fromkeys(names, 0)
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(module, inputs, output):
            k = counts[name]
            counts[name] += 1
            if call != -1 and k != call:
                return
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            done = call != -1 and len(captured) + (name not in captured) == len(names)
            captured[name] = output if done else output.clone()
            if done:
                raise StopForward
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        with torch.set_grad_enabled(grad):
            model(x)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if missing:
        n = missing[0]
        raise ValueError(f"layer {n!r} ran {counts[n]} time(s) in the forward pass; call={call} was not reached")
    return captured[names[0]] if isinstance(layer, str) else {n: captured[n] for n in names}


class LayerCapture:
    """Forward hook on one module: records its output at call `call`; optionally replaces it by a
    fresh leaf that requires grad (Grad-CAM: the backward stops there) and/or stops the forward.

    as_branch: the output stays in the autograd graph (self.output) and the model continues on a
    clone of it (self.branch), so in-place ops after the layer leave self.output intact and the
    gradient at self.branch is the gradient at the layer's output (differentiable CAMs). An
    output that requires no grad (nothing before the layer does) becomes a leaf that does.
    """

    def __init__(self, model: torch.nn.Module, layer: str | torch.nn.Module, call: int = 0, *, as_leaf: bool = False,
                 as_branch: bool = False, stop: bool = False) -> None:
        if not isinstance(call, int) or call < 0:
            raise ValueError(f"call must be an int >= 0, got {call!r}")
        self.module, self.layer, self.call = find_module(model, layer), layer, call
        self.as_leaf, self.as_branch, self.stop = as_leaf, as_branch, stop
        self.calls, self.output, self.branch = 0, None, None
        self._handle = None

    def __enter__(self) -> "LayerCapture":
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> bool:
        self._handle.remove()
        return exc[0] is StopForward

    def _hook(self, module, inputs, output):
        k = self.calls
        self.calls += 1
        if k != self.call:
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {self.layer!r} returns {type(output).__name__}, not a tensor")
        if self.as_leaf or (self.as_branch and not output.requires_grad):
            output = output.detach().requires_grad_(True)
        self.output = output
        if self.stop:
            raise StopForward
        if self.as_branch:
            self.branch = output.clone()
            return self.branch
        # the model continues on a copy: a following in-place op must not change the leaf
        return output.clone() if self.as_leaf else None

    def result(self) -> torch.Tensor:
        if self.output is None:
            raise ValueError(f"layer {self.layer!r} ran {self.calls} time(s) in the forward pass; "
                             f"call={self.call} was not reached")
        return self.output
