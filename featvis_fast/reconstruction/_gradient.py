"""The objective's gradient with respect to a batch of model inputs, the fast way: the forward
stops after the objective's last layer (models.extract), rectifiers save bit-packed masks,
parameters are detached and convolutions keep only what the input gradient needs (the backprop
family's lean RectifierRuleMode), batch norms fold into their convolutions where the plan learnt
for the model allows (backprop._rewrites), 4-D CPU inputs run channels-last, and CPU tensors come
from the caching allocator.

objective_gradient(model, crop, prepare, goal, generator) -> (scores (N,), d(sum scores)/d crop)
where prepare(crop) -> model input (differentiable; it may draw from `generator`, whose state is
restored when a rewrite mismatch runs the call again).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .. import _backend
from .. import _rectifier_reference as ref
from ..backprop import _rewrites
from ..backprop._lean import fold_batch_norms
from ..backprop._mode import RectifierRuleMode
from ..models import VIEW_ERROR, extract, find_module
from .objectives import Objective


def capture(model: torch.nn.Module, x: torch.Tensor, goal: Objective, *, stop: bool = True):
    """({layer: activation}, output or None); with stop, the forward stops after the last layer
    when the objective does not read the model's output."""
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


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class GradientFunction:
    """Computes the objective's gradient for one model and objective, step after step. The first
    call with channels-last inputs that meets a model which .view()s its activations switches to
    the contiguous layout for good."""

    def __init__(self, model: torch.nn.Module, goal: Objective, prepare: Callable[[torch.Tensor], torch.Tensor], *,
                 generator: torch.Generator, backend: str | None = None) -> None:
        self.model, self.goal, self.prepare, self.generator = model, goal, prepare, generator
        self.backend = backend
        self.layout = _channels_last

    def __call__(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = _backend.resolve_backend(self.backend, crop.device)
        drawn = self.generator.get_state()

        def attempt(rewrites):
            self.generator.set_state(drawn)
            leaf = crop.detach().requires_grad_(True)
            mode = RectifierRuleMode(ref.BACKPROP, chosen, nonlinear="ignore", rewrites=rewrites)
            with torch.enable_grad():
                x = self.layout(self.prepare(leaf))
                with mode:
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
            if self.layout is _channels_last and VIEW_ERROR in str(exc):
                self.layout = lambda x: x
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
                probe = self.layout(self.prepare(crop.detach()))
            leaf = probe.requires_grad_(True)
            with torch.enable_grad():
                with RectifierRuleMode(ref.BACKPROP, chosen, nonlinear="ignore", rewrites=rewrites):
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
                if VIEW_ERROR not in str(exc):
                    raise
                self.layout = lambda x: x
                _rewrites.run(self.model, full)
            for _ in range(2):
                self.generator.set_state(state)
                self(crop)
        finally:
            self.generator.set_state(state)
