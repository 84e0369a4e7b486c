"""Per-pixel feature similarity maps, the computation behind IFeaLiD (Zurowietz & Nattkemper 2020).

Given a layer's feature map (C, h, w), every pixel's C-vector is compared with the vector at a
reference pixel. Preprocessing (norms, normalized copy in the storage dtype, channel-major
layout) runs once; each query then streams the cached features exactly once through the fused
kernel (similarity + per-query min/max), and rendering maps the result to RGBA8.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import ImageDraw

from . import _reference, ops
from ._backend import resolve_backend
from ._validate import check_choice, check_feature_map, check_points
from .models import extract
from .render import colormap as _colormap
from .render import overlay, stretch_bounds

METRICS = ("cosine", "angular", "dot", "euclidean")
# metric -> (normalize the cached vectors?, kernel metric code)
_METRIC_PLAN = {
    "cosine": (True, _reference.INNER),      # <a,b>/(|a||b|) in [-1, 1]; zero vectors give 0
    "angular": (True, _reference.ANGULAR),   # IFeaLiD: 1 - acos(cos)/(pi/2) clamped to [0, 1]; zero vectors give 0
    "dot": (False, _reference.INNER),        # raw inner product <a, b>
    "euclidean": (False, _reference.EUCLIDEAN),  # distance ||a - b||_2 (small = similar)
}
STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int8)


def quantize_int8(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, N) float -> int8 codes (C, N) and per-pixel float32 scales (N,): x ~ codes * scale.

    Symmetric per-pixel quantization: each pixel's largest |component| maps to 127 (IFeaLiD
    stores features as 8-bit too, with one global range; a per-pixel range keeps more precision).
    """
    peak = flat.abs().amax(dim=0)
    scales = peak / 127.0
    codes = torch.round(flat / torch.where(peak > 0, scales, torch.ones_like(scales))).clamp_(-127, 127)
    return codes.to(torch.int8).contiguous(), scales.float().contiguous()


def prepare_features(features: torch.Tensor, metric: str,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(C, h, w) float features -> (C, h*w) contiguous cache in `dtype` (unit-normalized per pixel
    for cosine/angular; all-zero vectors stay zero), plus per-pixel scales (N,) for int8 storage."""
    normalize, _ = _METRIC_PLAN[metric]
    flat = features.reshape(features.shape[0], -1).float()
    if normalize:
        norms = torch.linalg.vector_norm(flat, dim=0, keepdim=True)
        flat = flat / torch.where(norms > 0, norms, torch.ones_like(norms))
    if dtype == torch.int8:
        if metric == "euclidean":
            raise ValueError("int8 storage supports the cosine, angular and dot metrics, not euclidean")
        return quantize_int8(flat)
    cache = flat.to(dtype).contiguous()
    if not bool(torch.isfinite(cache).all()):
        raise ValueError(f"features overflow {dtype} storage for metric {metric!r} "
                         f"(max |value| {float(flat.abs().max()):.3g}); use dtype=torch.bfloat16 or torch.float32")
    return cache, None


class FeatureSimilarity:
    """Cached feature map answering per-pixel similarity queries (IFeaLiD, Zurowietz & Nattkemper 2020).

    Preprocessing (norms, the normalized copy in the storage dtype, channel-major layout) runs
    once; each query streams the cache once through the fused kernel.

    Args:
        features: (C, h, w) floating tensor (any device; CUDA tensors run on the GPU backends).
        metric: "cosine", "angular" (IFeaLiD's formula), "dot" or "euclidean" (a distance).
        dtype: the cache's storage: torch.float32, torch.float16, torch.bfloat16 (float32
            accumulation) or torch.int8 (per-pixel scaled 8-bit codes, exact integer accumulation,
            half the memory traffic of float16; not for euclidean).
        backend: "cuda", "triton", "cpp", "torch" or None (the fastest for the device).
    """

    def __init__(self, features: torch.Tensor, metric: str = "cosine", dtype: torch.dtype = torch.float16,
                 backend: str | None = None) -> None:
        check_feature_map(features)
        check_choice("metric", metric, METRICS)
        if dtype not in STORAGE_DTYPES:
            raise TypeError("dtype must be one of torch.float32, torch.float16, torch.bfloat16, torch.int8, "
                            f"got {dtype}")
        self.metric = metric
        self.dtype = dtype
        self.channels, self.height, self.width = (int(s) for s in features.shape)
        self.device = features.device
        self.backend = resolve_backend(backend, features.device)
        self._kernel_metric = _METRIC_PLAN[metric][1]
        self._cache, self._scales = prepare_features(features.detach(), metric, dtype)

    def __repr__(self) -> str:
        return (f"FeatureSimilarity(C={self.channels}, h={self.height}, w={self.width}, metric={self.metric!r}, "
                f"dtype={self.dtype}, backend={self.backend!r}, device={self.device})")

    @property
    def cache(self) -> torch.Tensor:
        """The prepared (C, h*w) feature cache in the storage dtype (int8: codes; see `scales`)."""
        return self._cache

    @property
    def scales(self) -> torch.Tensor | None:
        """Per-pixel (h*w,) float32 scales of int8 storage (codes * scale ~ vector), else None."""
        return self._scales

    def _query_flat(self, points: object) -> tuple[torch.Tensor, torch.Tensor, bool]:
        pts, single = check_points(points, self.height, self.width)
        idx = (pts[:, 0] * self.width + pts[:, 1]).to(self.device)
        queries = self._cache.index_select(1, idx).t().contiguous()
        query_scales = None if self._scales is None else self._scales.index_select(0, idx)
        sim, minmax = ops.pixel_similarity(self._cache, queries, self._kernel_metric, self._scales, query_scales,
                                           self.backend)
        return sim, minmax, single

    def query(self, points: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Similarity of every pixel to the reference pixel(s).

        points: (row, col) -> (h, w) float32; or (Q, 2) rows of (row, col) -> (Q, h, w) float32.
        """
        sim, _, single = self._query_flat(points)
        sim = sim.view(-1, self.height, self.width)
        return sim[0] if single else sim

    def image_to_cell(self, x: float, y: float, image_size: tuple[int, int]) -> tuple[int, int]:
        """Image pixel (x, y) of an image of size (width, height) -> feature-map cell (row, col)."""
        width, height = image_size
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {image_size}")
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"image pixel (x={x}, y={y}) lies outside the {width}x{height} image")
        return int(y * self.height / height), int(x * self.width / width)

    def query_image_xy(self, x: float, y: float, image_size: tuple[int, int]) -> torch.Tensor:
        """Similarity map (h, w) for the feature cell under image pixel (x, y); image_size = (width, height)."""
        return self.query(self.image_to_cell(x, y, image_size))

    def render(self, point: Sequence[int] | torch.Tensor, colormap: str = "fire",
               stretch: str | tuple[float, float] = "minmax", size: tuple[int, int] | None = None,
               return_range: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heat map(s) as uint8 RGBA: (H, W, 4) for one point, (Q, H, W, 4) for (Q, 2) points.

        stretch: "minmax" maps each query's own [min, max] onto the colour map (as IFeaLiD does),
        or a fixed (lo, hi) range. size: (H, W) to upsample the similarity map bilinearly before
        colouring (default: the feature map's (h, w)). return_range: also return the colour range
        used, (rgba, lo, hi) with lo, hi float32 of shape () for one point, (Q,) for a batch.
        """
        lut = _colormap(colormap, self.device)
        sim, minmax, single = self._query_flat(point)
        q = sim.shape[0]
        lo, hi = stretch_bounds(stretch, minmax)
        height, width = self.height, self.width
        if size is not None:
            height, width = (int(s) for s in size)
            if height <= 0 or width <= 0:
                raise ValueError(f"size must be a positive (H, W), got {size}")
            if (height, width) != (self.height, self.width):
                sim = F.interpolate(sim.view(q, 1, self.height, self.width), size=(height, width),
                                    mode="bilinear", align_corners=False).reshape(q, -1).contiguous()
        rgba = ops.colorize(sim, lo, hi, lut, self.backend).view(q, height, width, 4)
        if single:
            rgba, lo, hi = rgba[0], lo[0], hi[0]
        return (rgba, lo, hi) if return_range else rgba


def similarity_overlay(model: torch.nn.Module, preprocess, image, layer: str, pixel: tuple[int, int],
                       metric: str = "cosine", colormap: str = "fire", size: int | None = 224,
                       dtype: torch.dtype = torch.float16, backend: str | None = None, alpha: float = 0.6,
                       device: str = "cpu"):
    """Heat map of feature similarity to one image pixel, overlaid on the image (IFeaLiD's view).

    Args:
        model: the CNN; preprocess: its featvis_fast.models.Preprocess.
        image: a PIL image (H, W).
        layer: the layer whose (C, h, w) features are compared (see featvis_fast.layer_names).
        pixel: the reference pixel (y, x) in image coordinates.
        metric: one of METRICS. colormap: a featvis_fast.render colormap name.
        size: model input size (None: the image's own resolution).
        dtype: the feature cache's storage dtype. backend: kernel backend (None: automatic).
        alpha: heat-map opacity. device: where the model runs.

    Returns:
        a PIL RGB image of the image's size with the heat map blended in and the pixel circled.
    """
    y, x = pixel
    if not (0 <= y < image.height and 0 <= x < image.width):
        raise ValueError(f"pixel (y={y}, x={x}) lies outside the {image.width}x{image.height} image")
    feats = extract(model, preprocess(image, size=size).to(device), layer)[0]
    sim = FeatureSimilarity(feats, metric=metric, dtype=dtype, backend=backend)
    cell = sim.image_to_cell(x, y, image.size)
    rgba = sim.render(cell, colormap=colormap, size=(image.height, image.width))
    out = overlay(image, rgba, alpha)
    r = max(3, min(image.size) // 80)
    ImageDraw.Draw(out).ellipse((x - r, y - r, x + r, y + r), outline="cyan", width=max(1, r // 2))
    return out
