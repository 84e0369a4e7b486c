"""The optimization state of one batch of reconstructed images, advanced by the fused step
`featvis::ascent_step` (semantics: featvis_fast._ascent_reference): the parameter tensor x
(N, C, H, W), the optimizer's float32 state, the step count, the jitter offsets of the crop the
model sees next, and the torch.Generator every random draw comes from. `state_dict()` holds all of
it, so a run restored from a checkpoint continues exactly as the uninterrupted one. A schedule
(step -> StepSettings, a pure function of the step number) may change the settings step by step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import _backend
from .._ascent_reference import OPTIMIZERS, Regularizers, crop
from ..ops.ascent import ascent_step
from ._filters import gaussian_blur


@dataclass(frozen=True)
class StepSettings:
    """optimizer: "sgd" (momentum, FeatureVis / Mahendran & Vedaldi), "nesterov" (SGD with Nesterov
    momentum, Stergiou 2021) or "adam" (Lucid).
    normalize: divide each image's gradient by its mean magnitude. regularizers: weights on x
    (see _ascent_reference). clip: (lo, hi) or None. jitter: the model sees a random
    (H - jitter, W - jitter) crop of x each step. blur_every / blur_sigma: Gaussian blur of x
    every k steps (0: never; Yosinski et al. 2015)."""

    optimizer: str = "adam"
    lr: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    normalize: bool = False
    regularizers: Regularizers = field(default_factory=Regularizers)
    clip: tuple[float, float] | None = None
    jitter: int = 0
    blur_every: int = 0
    blur_sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not isinstance(self.jitter, int) or self.jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {self.jitter!r}")
        if not isinstance(self.blur_every, int) or self.blur_every < 0:
            raise ValueError(f"blur_every must be an int >= 0, got {self.blur_every!r}")
        if self.clip is not None and not self.clip[0] <= self.clip[1]:
            raise ValueError(f"clip must be (lo, hi) with lo <= hi, got {self.clip!r}")


class Ascent:
    """x0: (N, C, H, W) starting parameters (copied); the crop the model sees is
    (N, C, H - jitter, W - jitter). schedule: step (from 1) -> the StepSettings of that step,
    consulted before each step (a pure function of the step, so that a restored run continues
    exactly); it must keep `settings`' optimizer and jitter."""

    def __init__(self, x0: torch.Tensor, settings: StepSettings, generator: torch.Generator, *,
                 backend: str | None = None, schedule: Callable[[int], StepSettings] | None = None) -> None:
        if x0.dim() != 4:
            raise ValueError(f"x0 must be (N, C, H, W), got {tuple(x0.shape)}")
        h, w = x0.shape[-2:]
        if settings.jitter >= min(h, w):
            raise ValueError(f"jitter {settings.jitter} leaves no crop of a {h}x{w} image")
        self.settings, self.generator, self.schedule = settings, generator, schedule
        self.backend = _backend.resolve_backend(backend, x0.device)
        self.x = x0.detach().float().contiguous().clone()
        self.m = torch.zeros_like(self.x)
        self.v = torch.zeros_like(self.x) if settings.optimizer == "adam" else None
        self.step = 0
        self.offsets = self._draw()
        self.crop = self._crop(self.offsets)

    @property
    def crop_size(self) -> tuple[int, int]:
        j = self.settings.jitter
        return self.x.shape[-2] - j, self.x.shape[-1] - j

    def _draw(self) -> torch.Tensor:
        j, n = self.settings.jitter, self.x.shape[0]
        if j == 0:  # no draw: the generator stays where the transforms expect it
            return torch.zeros(n, 2, dtype=torch.int32, device=self.x.device)
        return torch.randint(0, j + 1, (n, 2), generator=self.generator).to(torch.int32).to(self.x.device)

    def _crop(self, offsets: torch.Tensor) -> torch.Tensor:
        if self.settings.jitter == 0:
            return self.x.clone()
        return crop(self.x, offsets, *self.crop_size).contiguous()

    def advance(self, gradient: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One step: gradient(crop) -> (scores (N,), d scores / d crop); returns the scores."""
        if self.schedule is not None:
            self.settings = self._scheduled(self.step + 1)
        s, r = self.settings, self.settings.regularizers
        scores, grad = gradient(self.crop)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(f"the objective's gradient is not finite at step {self.step + 1}; "
                                     "lower the learning rate or check the objective")
        next_offsets = self._draw()
        self.step += 1
        clip = s.clip if s.clip is not None else (1.0, 0.0)
        x, m, v, nxt = ascent_step(self.x, grad.float(), self.offsets, self.m, self.v, next_offsets, self.step,
                                   s.lr, s.optimizer, s.momentum, s.betas[0], s.betas[1], s.eps, s.normalize, r.l1,
                                   r.l2, r.lp, r.p, r.tv, r.beta, r.tv_eps, clip[0], clip[1], *self.crop_size,
                                   self.backend)
        self.x, self.m, self.v = x, m, (v if s.optimizer == "adam" else None)
        self.offsets = next_offsets
        if s.blur_every and self.step % s.blur_every == 0:
            self.x = gaussian_blur(self.x, s.blur_sigma).contiguous()
            nxt = self._crop(next_offsets)
        self.crop = nxt
        return scores

    def _scheduled(self, step: int) -> StepSettings:
        s = self.schedule(step)
        if not isinstance(s, StepSettings):
            raise TypeError(f"the schedule must return StepSettings, got {type(s).__name__} at step {step}")
        if s.optimizer != self.settings.optimizer or s.jitter != self.settings.jitter:
            raise ValueError(f"the schedule changed the optimizer or the jitter at step {step}: the optimizer state "
                             "and the crop size are set once per run")
        return s

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """x = fn(x) between steps (a filter, a projection; same shape); the crop the model sees
        next is cut again. The optimizer state is kept."""
        x = fn(self.x)
        if not isinstance(x, torch.Tensor) or x.shape != self.x.shape:
            raise ValueError(f"apply must keep the parameters' shape {tuple(self.x.shape)}, got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        self.x = x.detach().to(self.x.dtype).contiguous()
        self.crop = self._crop(self.offsets)

    def state_dict(self) -> dict:
        return {"x": self.x.cpu(), "m": self.m.cpu(), "v": None if self.v is None else self.v.cpu(),
                "step": self.step, "offsets": self.offsets.cpu(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["x"].shape) != tuple(self.x.shape):
            raise ValueError(f"the checkpoint holds images {tuple(state['x'].shape)}, this run makes "
                             f"{tuple(self.x.shape)}")
        device = self.x.device
        self.x = state["x"].to(device)
        self.m = state["m"].to(device)
        self.v = None if state["v"] is None else state["v"].to(device)
        self.step = int(state["step"])
        self.offsets = state["offsets"].to(device)
        self.generator.set_state(state["generator"])
        self.crop = self._crop(self.offsets)
