"""The objective's gradient with respect to a batch of model inputs, the fast way: the forward
stops after the objective's last layer (engine.capture.extract), rectifiers save bit-packed masks,
parameters are detached and convolutions keep only what the input gradient needs (the backprop
family's lean RectifierRuleMode), batch norms fold into their convolutions where the plan learnt
for the model allows (engine.rewrites), 4-D CPU inputs run channels-last, and CPU tensors come
from the caching allocator.

objective_gradient(model, crop, prepare, goal, generator) -> (scores (N,), d(sum scores)/d crop)
where prepare(crop) -> model input (differentiable; it may draw from `generator`, whose state is
restored when a rewrite mismatch runs the call again).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from .. import _backend
from .. import _rectifier_reference as ref
from ..engine import layout
from ..engine import rewrites as _rewrites
from ..engine.capture import extract, find_module
from ..engine.lean import fold_batch_norms
from ..engine.rule_mode import RectifierRuleMode
from ._graphed import GraphedGradient, try_graph
from .objectives import Objective, input_key


def capture(model: torch.nn.Module, x: torch.Tensor, goal: Objective, *, stop: bool = True):
    """({layer: activation}, output or None); with stop, the forward stops after the last layer
    when the objective does not read the model's output. The inputs of the modules in
    goal.inputs (their first call) come under input_key(name); one that the forward did not
    reach before it stopped is missing."""
    inputs, seen = sorted(getattr(goal, "inputs", ())), {}
    pre = [find_module(model, name).register_forward_pre_hook(
        lambda m, args, name=name: seen.setdefault(input_key(name), args[0])) for name in inputs]
    try:
        acts, out = _capture_layers(model, x, goal, stop)
    finally:
        for h in pre:
            h.remove()
    acts.update(seen)
    return acts, out


def _capture_layers(model, x, goal, stop):
    layers = sorted(goal.layers)
    if stop and not goal.needs_output:
        acts = extract(model, x, layers, grad=torch.is_grad_enabled())
        return (acts if isinstance(acts, dict) else {layers[0]: acts}), None
    acts, handles = {}, []
    for name in layers:
        handles.append(find_module(model, name).register_forward_hook(
            lambda m, i, o, name=name: acts.setdefault(name, o.clone())))
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return acts, out


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class GradientFunction:
    """Computes the objective's gradient for one model and objective, step after step.

    channels_last: run the model on channels-last inputs (None: on the CPU, where oneDNN is
    faster in it; a model that .view()s its activations switches to the contiguous layout for
    good). autocast: "bf16" or "fp16" runs the model's forward (and so its backward) under
    torch.autocast; the objective, the gradient handed to the step and the images stay float32.
    cuda_graph: replay the model's forward and backward from a CUDA graph (see _graphed; the
    objective must have no per-step state)."""

    def __init__(self, model: torch.nn.Module, goal: Objective, prepare: Callable[[torch.Tensor], torch.Tensor], *,
                 generator: torch.Generator, backend: str | None = None, channels_last: bool | None = None,
                 autocast: str | None = None, cuda_graph: bool = False) -> None:
        if autocast is not None and autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {tuple(AUTOCAST)} or None, got {autocast!r}")
        self.model, self.goal, self.prepare, self.generator = model, goal, prepare, generator
        self.backend, self.autocast, self.channels_last = backend, autocast, channels_last
        self.layout = None
        self.cuda_graph = cuda_graph
        self._graph: GraphedGradient | None = None

    def _layout(self, device: torch.device):
        if self.layout is None:
            wanted = device.type == "cpu" if self.channels_last is None else self.channels_last
            self.layout = layout.channels_last if wanted else layout.as_is
        return self.layout

    def _autocast(self, device: torch.device):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AUTOCAST[self.autocast])

    def _model_grad(self, x: torch.Tensor, chosen: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, d scores.sum() / dx) for a model input x that requires grad (no rewrites: the
        graphed path)."""
        with torch.enable_grad():
            with RectifierRuleMode(ref.BACKPROP, chosen, nonlinear="ignore"), self._autocast(x.device):
                acts, out = capture(self.model, x, self.goal)
            scores = self.goal(acts, out)
            fold_batch_norms(scores)
            (grad,) = torch.autograd.grad(scores.sum(), x)
        return scores.detach(), grad

    def _graphed(self, crop: torch.Tensor, chosen: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The step's gradient through the CUDA graph (captured on first use), or None to run eagerly."""
        leaf = crop.detach().requires_grad_(True)
        with torch.enable_grad():
            x = self._layout(crop.device)(self.prepare(leaf))
            if self._graph is None:
                self._graph = try_graph(lambda xi: self._model_grad(xi, chosen), x.detach())
                if self._graph is None:
                    self.cuda_graph = False
                    return None
            scores, grad_x = self._graph(x.detach())
            (grad,) = torch.autograd.grad(x, leaf, grad_x)
        return scores, grad

    def __call__(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = _backend.resolve_backend(self.backend, crop.device)
        if self.cuda_graph:
            graphed = self._graphed(crop, chosen)
            if graphed is not None:
                return graphed
        drawn = self.generator.get_state()

        def attempt(rewrites):
            self.generator.set_state(drawn)
            leaf = crop.detach().requires_grad_(True)
            mode = RectifierRuleMode(ref.BACKPROP, chosen, nonlinear="ignore", rewrites=rewrites)
            with torch.enable_grad():
                x = self._layout(crop.device)(self.prepare(leaf))
                with mode, self._autocast(crop.device):
                    acts, out = capture(self.model, x, self.goal)
                if rewrites is not None:
                    rewrites.check_no_escapes()
                scores = self.goal(acts, out)
                fold_batch_norms(scores)
                (grad,) = torch.autograd.grad(scores.sum(), leaf)
            return scores.detach(), grad

        try:
            return _rewrites.run(self.model, attempt)
        except RuntimeError as exc:
            if self.layout is layout.channels_last and layout.is_layout_error(exc):
                self.layout = layout.as_is
                self.generator.set_state(drawn)
                return self(crop)
            raise

    def teach(self, crop: torch.Tensor) -> None:
        """Let the forward-rewrite plan learn the model from one whole forward and backward, then
        settle it with two objective passes (a layer the objective captures is refused there), so
        that every step after this runs the same arithmetic, in this process or in a resumed one.
        The generator's state is left as it was."""
        chosen = _backend.resolve_backend(self.backend, crop.device)
        state = self.generator.get_state()

        def full(rewrites):
            self.generator.set_state(state)
            with torch.no_grad():
                probe = self._layout(crop.device)(self.prepare(crop.detach()))
            leaf = probe.requires_grad_(True)
            with torch.enable_grad():
                with RectifierRuleMode(ref.BACKPROP, chosen, nonlinear="ignore", rewrites=rewrites), \
                        self._autocast(crop.device):
                    out = self.model(leaf)
                if rewrites is not None:
                    rewrites.check_no_escapes()
                ran = isinstance(out, torch.Tensor) and out.requires_grad
                if ran:
                    fold_batch_norms(out)
                    torch.autograd.grad(out.sum(), leaf)
            del out
            if ran and rewrites is not None:
                rewrites.learn()

        try:
            try:
                _rewrites.run(self.model, full)
            except RuntimeError as exc:
                if not layout.is_layout_error(exc):
                    raise
                self.layout = layout.as_is
                _rewrites.run(self.model, full)
            for _ in range(2):
                self.generator.set_state(state)
                self(crop)
        finally:
            self.generator.set_state(state)
