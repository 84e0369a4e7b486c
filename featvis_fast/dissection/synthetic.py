"""A synthetic dissection dataset with known answers, and a hand-built model whose units respond
to known concepts (tests, the benchmark and the README's example).

SyntheticShapes: black images with 2 to 4 bars, each red, green or blue at a random brightness
(0.5 to 1), horizontal or vertical, 4 px thick and 14 to 26 px long, at random places. Concepts:
red, green, blue (category "color") and hbar, vbar (category "shape"); the shape category is
left unannotated in a fifth of the images. Masks are at the image resolution.

PlantedNet: one convolution block, layer "detectors" (6 units at half the image resolution):
units 0-2 fire on red, green and blue pixels, units 3-4 on horizontal and vertical bars (a
1 x 9 and a 9 x 1 box filter of the brightness), unit 5 is a fixed random field that ignores the
image (it must come out uninterpretable).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from .data import Batch, Concept

CONCEPTS = [Concept("red", "color"), Concept("green", "color"), Concept("blue", "color"),
            Concept("hbar", "shape"), Concept("vbar", "shape")]
UNIT_CONCEPTS = ["red", "green", "blue", "hbar", "vbar", None]  # what each PlantedNet unit should be labelled


class SyntheticShapes:
    """n images of size x size, made from `seed`, in batches of batch_size (see the module docstring)."""

    concepts = CONCEPTS

    def __init__(self, n: int = 256, size: int = 64, seed: int = 0, batch_size: int = 32) -> None:
        if size < 32:
            raise ValueError(f"synthetic images need size >= 32 (bars are up to 26 px long), got {size}")
        self.n, self.size, self.seed, self.batch_size = n, size, seed, batch_size

    def __len__(self) -> int:
        return self.n

    def _image(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.size
        image = torch.zeros(3, s, s)
        masks = torch.zeros(len(CONCEPTS), s, s, dtype=torch.bool)
        for _ in range(int(torch.randint(2, 5, (), generator=gen))):
            colour = int(torch.randint(0, 3, (), generator=gen))
            horizontal = bool(torch.randint(0, 2, (), generator=gen))
            length = int(torch.randint(14, 27, (), generator=gen))
            brightness = 0.5 + 0.5 * float(torch.rand((), generator=gen))
            h, w = (4, length) if horizontal else (length, 4)
            y = int(torch.randint(0, s - h + 1, (), generator=gen))
            x = int(torch.randint(0, s - w + 1, (), generator=gen))
            image[:, y:y + h, x:x + w] = 0
            image[colour, y:y + h, x:x + w] = brightness
            masks[:, y:y + h, x:x + w] = False
            masks[colour, y:y + h, x:x + w] = True
            masks[3 if horizontal else 4, y:y + h, x:x + w] = True
        annotated = torch.ones(len(CONCEPTS), dtype=torch.bool)
        if float(torch.rand((), generator=gen)) < 0.2:
            annotated[3:] = False
            masks[3:] = False
        return image, masks, annotated

    def __iter__(self) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.n, self.batch_size):
            items = [self._image(gen) for _ in range(min(self.batch_size, self.n - start))]
            yield tuple(torch.stack(t) for t in zip(*items))


class PlantedNet(nn.Module):
    """Units that respond to the synthetic concepts (see the module docstring); input (B, 3, S, S)
    with S = size, layer "detectors" -> (B, 6, S / 2, S / 2), then a linear head."""

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.colour = nn.Conv2d(3, 3, 1)
        self.bars = nn.Conv2d(1, 2, 9, padding=4)
        with torch.no_grad():
            self.colour.weight.copy_((2 * torch.eye(3) - 1).view(3, 3, 1, 1))  # own channel minus the others
            self.colour.bias.fill_(-0.2)
            self.bars.weight.zero_()
            self.bars.weight[0, 0, 4, :] = 1 / 9  # horizontal box
            self.bars.weight[1, 0, :, 4] = 1 / 9  # vertical box
            self.bars.bias.fill_(-0.45)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", torch.rand(1, 1, size, size, generator=gen))
        self.detectors = nn.Sequential(nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.amax(dim=1, keepdim=True)
        units = torch.cat([self.colour(x), self.bars(brightness), self.noise.expand(x.shape[0], -1, -1, -1)], 1)
        return self.head(self.detectors(units))
