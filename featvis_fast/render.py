"""Colour maps, overlays and image grids for heat maps (uint8 RGBA in, PIL images out)."""
from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ._validate import check_choice

COLORMAPS = ("fire", "viridis", "magma", "gray")


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    with importlib.resources.files("featvis_fast").joinpath("data/colormaps.npz").open("rb") as fh:
        data = np.load(fh)
        return {name: data[name].copy() for name in COLORMAPS}


@functools.cache
def _lut_on(name: str, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_tables()[name]).to(device)


def colormap(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (256, 4) uint8 RGBA lookup table of a colour map.

    fire: ImageJ's Fire LUT, the one IFeaLiD uses (black-blue-red-yellow-white); viridis and
    magma: matplotlib's perceptually uniform maps; gray: a linear ramp.
    """
    check_choice("colormap", name, COLORMAPS)
    return _lut_on(name, torch.device(device))


def _to_pil_rgba(rgba: torch.Tensor | np.ndarray) -> Image.Image:
    arr = rgba.detach().cpu().numpy() if isinstance(rgba, torch.Tensor) else np.asarray(rgba)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
        raise ValueError(f"expected a uint8 RGBA array of shape (H, W, 4), got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr, "RGBA")


def overlay(image: Image.Image, rgba: torch.Tensor | np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Blend an (H, W, 4) heat map over `image` (resized to the image if needed) -> RGB image.

    alpha in [0, 1] scales the heat map's own alpha channel.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    heat = _to_pil_rgba(rgba)
    base = image.convert("RGBA")
    if heat.size != base.size:
        heat = heat.resize(base.size, Image.BILINEAR)
    a = np.asarray(heat)[..., 3].astype(np.float32) * float(alpha)
    heat.putalpha(Image.fromarray(a.round().astype(np.uint8), "L"))
    return Image.alpha_composite(base, heat).convert("RGB")


def grid(images: Sequence[Image.Image], columns: int, labels: Sequence[str] | None = None,
         cell: int = 256, pad: int = 4) -> Image.Image:
    """Tile images into rows of `columns`, each fitted into a `cell` square, with optional captions."""
    if not images:
        raise ValueError("grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    thumbs = []
    for img in images:
        t = img.copy()
        t.thumbnail((cell, cell))
        thumbs.append(t)
    rows = [thumbs[k:k + columns] for k in range(0, len(thumbs), columns)]
    caption = 14 if labels else 0
    heights = [max(t.height for t in row) + caption for row in rows]
    out = Image.new("RGB", (columns * (cell + pad) + pad, sum(heights) + pad * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(out)
    y0 = pad
    for r, row in enumerate(rows):
        for c, thumb in enumerate(row):
            x0 = pad + c * (cell + pad)
            out.paste(thumb, (x0, y0 + caption))
            if labels:
                draw.text((x0, y0), labels[r * columns + c][:40], fill="black")
        y0 += heights[r] + pad
    return out
