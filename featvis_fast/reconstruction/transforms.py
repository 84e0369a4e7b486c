"""Robustness transforms for activation maximization (Olah et al. 2017, Lucid), on the device,
differentiable, every random draw from a torch.Generator.

pad(w, value)       constant padding on every side (Lucid pads with 0.5)
jitter(d)           a random (H - d) x (W - d) crop per image
scale_rotate(scales, angles)
                    a random scale and rotation (degrees) per image, about the centre, in one
                    bilinear grid_sample that keeps the size (border pixels extend)
STANDARD            Lucid's standard set: pad(12, 0.5), jitter(8), scale in 1 + (i - 5) / 50 for
                    i in 0..10, rotation in -10..10 degrees (0 five times more often), jitter(4)
Where this differs from Lucid: Lucid draws one offset, scale and angle for the whole batch and
resizes (changing the size); here each image gets its own draws (a batch of many targets then
sees independent transforms) and scaling keeps the size. Images: (N, C, H, W).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _choice(values: Sequence[float], n: int, generator: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, len(values), (n,), generator=generator)
    return torch.tensor(values, dtype=torch.float32)[idx]


class Pad:
    def __init__(self, width: int, value: float = 0.5) -> None:
        self.width, self.value = int(width), float(value)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        w = self.width
        return F.pad(x, (w, w, w, w), value=self.value)


class Jitter:
    def __init__(self, d: int) -> None:
        self.d = int(d)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        d = min(self.d, h - 1, w - 1)
        if d <= 0:
            return x
        dy = torch.randint(0, d + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, d + 1, (n,), generator=generator).to(x.device)
        rows = dy[:, None] + torch.arange(h - d, device=x.device)[None]
        cols = dx[:, None] + torch.arange(w - d, device=x.device)[None]
        batch = torch.arange(n, device=x.device)[:, None, None]
        return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ScaleRotate:
    def __init__(self, scales: Sequence[float], angles: Sequence[float]) -> None:
        self.scales, self.angles = list(scales), list(angles)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        s = _choice(self.scales, n, generator)
        a = _choice(self.angles, n, generator) * (math.pi / 180)
        # output pixel -> input pixel: rotate by -a and shrink by s (content grows by s)
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x


STANDARD = Compose([Pad(12, 0.5), Jitter(8),
                    ScaleRotate([1 + (i - 5) / 50 for i in range(11)], list(range(-10, 11)) + 5 * [0]),
                    Jitter(4)])
PRESETS = {"standard": STANDARD, "none": Compose([])}


def preset(name_or_transforms) -> Compose:
    """'standard', 'none', a list of transforms, or a Compose."""
    if isinstance(name_or_transforms, Compose):
        return name_or_transforms
    if isinstance(name_or_transforms, str):
        if name_or_transforms not in PRESETS:
            raise ValueError(f"unknown transforms preset {name_or_transforms!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name_or_transforms]
    if name_or_transforms is None:
        return PRESETS["none"]
    items = list(name_or_transforms)
    bad = [t for t in items if not callable(t)]
    if bad:
        raise TypeError(f"transforms must be callables (x, generator) -> x; got {bad[0]!r}")
    return Compose(items)
