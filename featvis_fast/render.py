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
DIVERGING_COLORMAP = "bwr"  # blue - white - red, for signed maps (signed_map's -1 .. 1)


_ALL_COLORMAPS = COLORMAPS + (DIVERGING_COLORMAP, INDEX_COLORMAP)


@functools.cache
def _tables() -> dict[str, np.ndarray]:
    with importlib.resources.files("featvis_fast").joinpath("data/colormaps.npz").open("rb") as fh:
        data = np.load(fh)
        return {name: data[name].copy() for name in COLORMAPS}


@functools.cache
def _lut_on(name: str, device: torch.device) -> torch.Tensor:
    ramp = torch.arange(256, dtype=torch.uint8)
    if name == INDEX_COLORMAP:
        return torch.stack([ramp, ramp, ramp, torch.full_like(ramp, 255)], dim=1).to(device)
    if name == DIVERGING_COLORMAP:
        up = (ramp.float() / 127.5).clamp(max=1.0)          # 0 -> 1 over the lower half
        down = ((255 - ramp.float()) / 127.5).clamp(max=1.0)  # 1 -> 0 over the upper half
        rgb = torch.stack([up, torch.minimum(up, down), down], dim=1) * 255
        return torch.cat([rgb.round().to(torch.uint8), torch.full((256, 1), 255, dtype=torch.uint8)], 1).to(device)
    return torch.from_numpy(_tables()[name]).to(device)


def colormap(name: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (256, 4) uint8 RGBA lookup table of a colour map.

    fire: ImageJ's Fire LUT, the one IFeaLiD uses (black-blue-red-yellow-white); viridis and
    magma: matplotlib's perceptually uniform maps; gray: a linear ramp; bwr: blue-white-red for
    signed maps (white at the middle). "index" (INDEX_COLORMAP)
    puts the index itself in R, G and B: lut[rendered_index] equals rendering with that colour map.
    """
    check_choice("colormap", name, _ALL_COLORMAPS)
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
    check_choice("colormap", colormap, _ALL_COLORMAPS)
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


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) image in [0, 1] (clamped) as an 8-bit RGB PIL image."""
    return Image.fromarray((image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def attribution_heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """FeatureVis' display of an input attribution: max(., 0), L2 norm over the colour channels,
    divided by each map's maximum. (B, C, H, W) -> (B, H, W) in [0, 1] ((C, H, W) -> (H, W)); all-zero stays 0."""
    a = _batched(attribution)
    heat = a.clamp_min(0).norm(dim=1)
    peak = heat.amax(dim=(1, 2), keepdim=True)
    heat = torch.where(peak > 0, heat / torch.where(peak > 0, peak, 1.0), 0.0)
    return heat if attribution.dim() == 4 else heat[0]


def clipped_heatmap(attribution: torch.Tensor, outlier_perc: float = 2.0) -> torch.Tensor:
    """Captum's default display of an input attribution (visualize_image_attr, sign
    "absolute_value"): |sum over the colour channels|, divided by the value at which the sorted
    values' cumulative sum reaches (100 - outlier_perc)% of their total, clipped to 1; the few
    brightest pixels then no longer make the rest black.

    Args:
        attribution: (B, C, H, W) or (C, H, W).
        outlier_perc: the share (percent, in [0, 100)) of the total attribution, in the largest
            values, that saturates.
    Returns:
        (B, H, W) in [0, 1] ((H, W) for a (C, H, W) input); an all-zero map stays 0.
    """
    if not 0 <= outlier_perc < 100:
        raise ValueError(f"outlier_perc must be in [0, 100), got {outlier_perc!r}")
    a = _batched(attribution).double().sum(dim=1).abs()
    flat = a.flatten(1)
    values = flat.sort(dim=1).values
    sums = values.cumsum(dim=1)
    goal = sums[:, -1:] * (0.01 * (100.0 - outlier_perc))
    index = torch.searchsorted(sums, goal).clamp_max(flat.shape[1] - 1)  # first cumulative sum >= goal
    threshold = values.gather(1, index).view(-1, 1, 1)
    heat = torch.where(threshold > 0, a / torch.where(threshold > 0, threshold, 1.0), 0.0).clamp_max(1.0).float()
    return heat if attribution.dim() == 4 else heat[0]


def signed_map(attribution: torch.Tensor) -> torch.Tensor:
    """Sum over the colour channels divided by each map's largest magnitude: (B, C, H, W) ->
    (B, H, W) in [-1, 1] ((C, H, W) -> (H, W)); render with colorize(m, "bwr", stretch=(-1, 1))."""
    a = _batched(attribution).sum(dim=1)
    peak = a.abs().amax(dim=(1, 2), keepdim=True)
    signed = torch.where(peak > 0, a / torch.where(peak > 0, peak, 1.0), 0.0)
    return signed if attribution.dim() == 4 else signed[0]


def _batched(attribution: torch.Tensor) -> torch.Tensor:
    if not isinstance(attribution, torch.Tensor) or attribution.dim() not in (3, 4):
        shape = tuple(attribution.shape) if isinstance(attribution, torch.Tensor) else type(attribution).__name__
        raise ValueError(f"an attribution must be (B, C, H, W) or (C, H, W), got {shape}")
    a = attribution.detach().float()
    return a if a.dim() == 4 else a[None]

