"""Colour maps, overlays and image grids for heat maps (uint8 RGBA in, PIL images out)."""
from __future__ import annotations

import functools
import importlib.resources
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import ops
from ._backend import resolve_backend
from ._validate import check_choice

COLORMAPS = ("fire", "viridis", "magma", "gray")
# Not a colour: every channel holds the colour-map index (alpha 255). render / colorize with it and
# keep channel 0 to get what a client that applies the LUT itself needs, a quarter of the bytes.
INDEX_COLORMAP = "index"


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    with importlib.resources.files("featvis_fast").joinpath("data/colormaps.npz").open("rb") as fh:
        data = np.load(fh)
        return {name: data[name].copy() for name in COLORMAPS}


@functools.cache
def _lut_on(name: str, device: torch.device) -> torch.Tensor:
    if name == INDEX_COLORMAP:
        ramp = torch.arange(256, dtype=torch.uint8)
        return torch.stack([ramp, ramp, ramp, torch.full_like(ramp, 255)], dim=1).to(device)
    return torch.from_numpy(_tables()[name]).to(device)


def colormap(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (256, 4) uint8 RGBA lookup table of a colour map.

    fire: ImageJ's Fire LUT, the one IFeaLiD uses (black-blue-red-yellow-white); viridis and
    magma: matplotlib's perceptually uniform maps; gray: a linear ramp. "index" (INDEX_COLORMAP)
    puts the index itself in R, G and B: lut[rendered_index] equals rendering with that colour map.
    """
    check_choice("colormap", name, COLORMAPS + (INDEX_COLORMAP,))
    return _lut_on(name, torch.device(device))



def stretch_bounds(stretch: str | Sequence[float], minmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row colour range (lo (Q,), hi (Q,)) for `stretch`: "minmax" takes each row's own
    [min, max] from minmax (Q, 2); a finite (lo, hi) pair with lo < hi fixes the range."""
    if isinstance(stretch, str) and stretch == "minmax":
        return minmax[:, 0].contiguous(), minmax[:, 1].contiguous()
    if (isinstance(stretch, (tuple, list)) and len(stretch) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in stretch) and stretch[0] < stretch[1]):
        q = minmax.shape[0]
        return (torch.full((q,), float(stretch[0]), device=minmax.device),
                torch.full((q,), float(stretch[1]), device=minmax.device))
    raise ValueError(f"stretch must be 'minmax' or a finite (lo, hi) pair, got {stretch!r} (lo < hi)")


def colorize(values: torch.Tensor, colormap: str = "fire", stretch: str | Sequence[float] = "minmax",
             backend: str | None = None) -> torch.Tensor:
    """Any map of values -> uint8 RGBA through a colour map: (h, w) -> (h, w, 4), (Q, h, w) -> (Q, h, w, 4).

    stretch: "minmax" maps each map's own [min, max] onto the colour map, or a fixed (lo, hi).
    Same colour rule (and kernels) as FeatureSimilarity.render; NaN values raise.
    """
    if not isinstance(values, torch.Tensor) or values.ndim not in (2, 3) or values.numel() == 0:
        raise ValueError(f"values must be a non-empty (h, w) or (Q, h, w) tensor, got "
                         f"{tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__}")
    if not values.is_floating_point():
        values = values.float()
    flat = values.detach().reshape(-1 if values.ndim == 3 else 1, values.shape[-2] * values.shape[-1]).float()
    if bool(torch.isnan(flat).any()):
        raise ValueError("values contain NaN")
    lo, hi = stretch_bounds(stretch, torch.stack(torch.aminmax(flat, dim=1), dim=1))
    check_choice("colormap", colormap, COLORMAPS + (INDEX_COLORMAP,))
    lut = _lut_on(colormap, flat.device)
    rgba = ops.colorize(flat.contiguous(), lo, hi, lut, resolve_backend(backend, flat.device))
    return rgba.view(*values.shape, 4)


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
