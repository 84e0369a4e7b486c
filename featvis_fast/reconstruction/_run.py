"""What every reconstruction method shares: a batch of parameters advanced by the fused step
(_ascent.Ascent) with the objective's gradient (_gradient.GradientFunction), the model held in
eval mode while it runs, the CPU caching allocator, and a state that checkpoints and restores.
Subclasses (Maximization, Inversion, ClassAgnostic) set up the parameters, `prepare` (crop ->
model input) and `image_of` (parameters -> image in [0, 1]), and may give a schedule of step
settings and act between steps (`before_step`, `after_step`: filters, per-step weights)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine import cached_cpu_memory
from ._ascent import Ascent, StepSettings
from ._gradient import GradientFunction
from .objectives import Objective


class eval_mode:
    """Batch norm must use, and never update, its running statistics: eval mode inside, every
    submodule's own mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc) -> None:
        for m, training in self.modes:
            m.training = training


def norm_tensor(values, name: str, device) -> torch.Tensor:
    """(1, 3, 1, 1) from three per-channel numbers (an input normalization's mean or std)."""
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.shape != (3,) or not bool(torch.isfinite(t).all()) or (name == "std" and bool((t <= 0).any())):
        raise ValueError(f"{name} must be three finite numbers{' > 0' if name == 'std' else ''}, got {values!r}")
    return t.to(device).view(1, 3, 1, 1)


def check_model(model) -> torch.device:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters, so its device is unknown") from None


def check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


class Reconstruction:
    """`run(k)` takes k steps; `images()` -> (N, 3, H, W) in [0, 1]; `scores` the objective per
    image at the last step; `state_dict()` / `load_state_dict()` for checkpoints."""

    model: torch.nn.Module
    goal: Objective
    generator: torch.Generator

    def start(self, x0: torch.Tensor, settings: StepSettings, prepare: Callable[[torch.Tensor], torch.Tensor],
              image_of: Callable[[torch.Tensor], torch.Tensor], backend: str | None, *,
              channels_last: bool | None = None, autocast: str | None = None, cuda_graph: bool = False,
              schedule: Callable[[int], StepSettings] | None = None) -> None:
        if cuda_graph and x0.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, not {x0.device}")
        self.settings, self.image_of = settings, image_of
        self.gradient = GradientFunction(self.model, self.goal, prepare, generator=self.generator, backend=backend,
                                         channels_last=channels_last, autocast=autocast, cuda_graph=cuda_graph)
        self.ascent = Ascent(x0, settings, self.generator, backend=backend, schedule=schedule)
        self.scores: torch.Tensor | None = None
        self._taught = False

    @property
    def step(self) -> int:
        return self.ascent.step

    def run(self, steps: int, progress: Callable[[int], None] | None = None) -> None:
        with eval_mode(self.model), cached_cpu_memory(self.ascent.x.device):
            if not self._taught:
                self.gradient.teach(self.ascent.crop)
                self._taught = True
            for _ in range(steps):
                self.before_step(self.ascent.step + 1)
                self.scores = self.ascent.advance(self.gradient)
                self.after_step(self.ascent.step)
                if progress is not None:
                    progress(1)

    def before_step(self, step: int) -> None:
        """Called before step `step` (from 1) is taken; subclasses set per-step weights or filter
        the parameters here (self.ascent.apply). Must depend only on `step` and the state."""

    def after_step(self, step: int) -> None:
        """Called after step `step` was taken (same rules as before_step)."""

    def images(self) -> torch.Tensor:
        with torch.no_grad():
            return self.image_of(self.ascent.x).detach()

    def state_dict(self) -> dict:
        return {**self.ascent.state_dict(), "scores": None if self.scores is None else self.scores.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.ascent.load_state_dict(state)
        self.scores = None if state.get("scores") is None else state["scores"].to(self.ascent.x.device)
