"""Faithfulness curves: deletion and insertion (RISE), pixel flipping and region perturbation (Samek et al.).

Each removes (or inserts) the input in the order the attributions rank it and scores the model
after every step. All steps of all images are perturbed copies of x written batch by batch
(featvis::apply_masks, one fused pass per batch) and scored through one batched forward each,
so a curve of K points over B images costs K * B forwards in batches sized to memory, never a
Python loop over images or steps.

Ranking: pixels (or elements) are ordered by a stable descending sort, ties in memory order.
NumPy's default argsort (RISE's and Quantus' code) is not stable, so with tied attributions the
order among the tied pixels, and with it the curve, can differ from theirs; with distinct values
the results are the same to float rounding (tests/test_metrics_faithfulness.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import _backend
from ..engine import Target
from ..ops import perturbation as ops
from ._inputs import attribution_maps, memory_format_of, pixel_maps, positive_int, require_target, trapezoid_auc
from ._scoring import Scorer

QUANTUS_BASELINES = ("black", "white", "mean")


class CurveResult(NamedTuple):
    """Per-image scores and the curves they summarize.

    Attributes:
        scores: (B,) one number per image summarizing its curve (the area under it; ROAD: its mean).
        curves: (B, K) the model's score (or score drop) after each step.
    """
    scores: torch.Tensor
    curves: torch.Tensor


def _descending_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, F) -> (B, F) int64: each feature's position in a stable descending order (0 = largest)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return ranks


def baseline_fill(x: torch.Tensor, baseline: object, name: str = "baseline") -> torch.Tensor:
    """What removed features become, as a (B, C, H, W) tensor like x.

    Args:
        x: images (B, C, H, W).
        baseline: a number; "black" / "white" / "mean": each image's minimum / maximum / mean over
            all its channels and pixels (Quantus' named baselines); or a tensor broadcastable to x.
        name: the argument's name in error messages.

    Returns:
        the fill (B, C, H, W), x's dtype and device.
    """
    if isinstance(baseline, str):
        if baseline not in QUANTUS_BASELINES:
            raise ValueError(f"{name} must be a number, a tensor or one of {', '.join(QUANTUS_BASELINES)}, "
                             f"got {baseline!r}")
        flat = x.reshape(x.shape[0], -1)
        value = {"black": lambda: flat.amin(1), "white": lambda: flat.amax(1), "mean": lambda: flat.mean(1)}[baseline]()
        return value[:, None, None, None].expand_as(x).contiguous(memory_format=memory_format_of(x))
    if isinstance(baseline, Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            filled = baseline.to(dtype=x.dtype, device=x.device).expand_as(x)
            return filled.contiguous(memory_format=memory_format_of(x))
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(baseline.shape)} does not broadcast to x {tuple(x.shape)}") \
                from None
    raise TypeError(f"{name} must be a number, a tensor or one of {', '.join(QUANTUS_BASELINES)}, "
                    f"got {type(baseline).__name__}")



def rise_blur(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion substrate: each channel convolved with an 11 x 11 Gaussian of sigma 5, zero padded.

    The kernel is RISE's gkern(11, 5): scipy.ndimage.gaussian_filter (sigma 5, truncate 4, mode
    "reflect") of an 11 x 11 delta, built here from its separable 1-D factor.

    Args:
        x: images (B, C, H, W).

    Returns:
        the blurred images (B, C, H, W).
    """
    size, sigma, radius = 11, 5.0, 20
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (t / sigma) ** 2)
    weights /= weights.sum()
    # gaussian_filter's "reflect" mode (d c b a | a b c d | d c b a) folds the 41 taps onto 11 pixels
    factor = torch.zeros(size, dtype=torch.float64)
    for i in range(size):
        j = (i + t.long()) % (2 * size)
        j = torch.where(j >= size, 2 * size - 1 - j, j)
        factor[i] = weights[j == size // 2].sum()
    channels = x.shape[1]
    kernel = torch.outer(factor, factor).to(device=x.device, dtype=x.dtype).expand(channels, 1, size, size)
    return F.conv2d(x, kernel, padding=size // 2, groups=channels)


def _curve(scorer: Scorer, keep: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], fill: torch.Tensor,
           n_points: int, *, pixel_masks: bool, backend: str | None, progress: bool, desc: str) -> torch.Tensor:
    """(B, n_points) scores of the copies keep(point, image) describes.

    keep(points (N,), images (N,)) -> (N, H, W) (pixel_masks) or (N, C, H, W) boolean: True where a
    copy keeps x, False where it takes the fill.
    """
    x = scorer.x
    batch = x.shape[0]
    chosen = _backend.resolve_backend(backend, x.device) if pixel_masks else None
    mask_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    def copies(start, stop):  # copy i is point i // B of image i % B
        index = torch.arange(start, stop, device=x.device)
        points, images = index // batch, index % batch
        kept = keep(points, images)
        if pixel_masks:
            src = images.to(torch.int32)
            return ops.apply_masks(x, fill, kept.to(mask_dtype), src, chosen), images
        copies = torch.where(kept, x.index_select(0, images), fill.index_select(0, images))
        return copies.contiguous(memory_format=memory_format_of(x)), images  # index_select drops channels-last

    scores = scorer.score(n_points * batch, copies, progress=progress, desc=desc)
    return scores.reshape(n_points, batch).T.contiguous()


def _substrate(x: torch.Tensor, baseline: object) -> torch.Tensor:
    if isinstance(baseline, str) and baseline == "blur":
        return rise_blur(x)
    return baseline_fill(x, baseline)


def _causal(mode: str, model, x, attributions, target, step, baseline, activation, batch_size, progress,
            backend) -> CurveResult:
    require_target(target, mode)
    scorer = Scorer(model, x, target, activation=activation, batch_size=batch_size)
    x = scorer.x
    height, width = x.shape[2:]
    step = width if step is None else positive_int(step, "step")
    ranks = _descending_ranks(pixel_maps(attribution_maps(attributions, x)).reshape(x.shape[0], -1))
    ranks = ranks.reshape(-1, height, width)
    n_steps = math.ceil(height * width / step)
    fill = _substrate(x, baseline)
    if mode == "deletion":  # point k: the first k * step pixels of the order replaced by the substrate
        keep = lambda points, images: ranks.index_select(0, images) >= (points * step)[:, None, None]
    else:  # insertion: point k shows the first k * step pixels of x over the substrate
        keep = lambda points, images: ranks.index_select(0, images) < (points * step)[:, None, None]
    curves = _curve(scorer, keep, fill, n_steps + 1, pixel_masks=True, backend=backend, progress=progress,
                    desc=mode)
    return CurveResult(trapezoid_auc(curves, 1.0 / n_steps), curves)


def deletion(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
             step: int | None = None, baseline: float | str | torch.Tensor = 0.0, activation: str | None = "softmax",
             batch_size: int | None = None, progress: bool = False, backend: str | None = None) -> CurveResult:
    """The deletion metric (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models"): remove pixels most important first, the score should fall fast.

    Point k of the curve scores x with its `k * step` highest-attributed pixels (all channels)
    replaced by the substrate, k = 0 .. ceil(H W / step); the score is the area under the curve
    with the x axis the fraction of pixels removed ((sum - first / 2 - last / 2) / steps, RISE's auc).
    Lower is better. Same definition as RISE's CausalMetric("del", step, torch.zeros_like).

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W).
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) (channels summed per pixel).
        target: the explained class per image: an int, a LongTensor (B,) or a callable on the output.
        step: pixels removed per step (default: the image width, RISE's 224 at 224 px).
        baseline: the substrate removed pixels become: a number (RISE: 0), "black" / "white" / "mean" (each
            image's minimum / maximum / mean) or a tensor broadcastable to x.
        activation: "softmax" (RISE's probabilities) or None (raw outputs).
        batch_size: copies per forward (None: the largest that fits, as occlusion's).
        progress: a tqdm bar.
        backend: kernel backend of featvis::apply_masks.

    Returns:
        CurveResult(scores (B,) area under the curve, curves (B, steps + 1)), float64 for a float64
        model and input, else float32.
    """
    return _causal("deletion", model, x, attributions, target, step, baseline, activation, batch_size, progress,
                   backend)


def insertion(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
              step: int | None = None, baseline: float | str | torch.Tensor = "blur",
              activation: str | None = "softmax", batch_size: int | None = None, progress: bool = False,
              backend: str | None = None) -> CurveResult:
    """The insertion metric (Petsiuk et al. 2018, RISE): reveal pixels most important first over a
    substrate, the score should rise fast.

    Point k of the curve scores the substrate with the `k * step` highest-attributed pixels of x
    put back, k = 0 .. ceil(H W / step); the score is RISE's area under the curve. Higher is better.
    Same definition as RISE's CausalMetric("ins", step, blur) with its 11 x 11, sigma 5 blur.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W).
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) (channels summed per pixel).
        target: the explained class per image: an int, a LongTensor (B,) or a callable on the output.
        step: pixels inserted per step (default: the image width).
        baseline: the substrate: "blur" (RISE's blurred image, rise_blur), a number, "black" / "white" / "mean" or a
            tensor broadcastable to x.
        activation: "softmax" (RISE's probabilities) or None (raw outputs).
        batch_size: copies per forward (None: the largest that fits).
        progress: a tqdm bar.
        backend: kernel backend of featvis::apply_masks.

    Returns:
        CurveResult(scores (B,) area under the curve, curves (B, steps + 1)).
    """
    return _causal("insertion", model, x, attributions, target, step, baseline, activation, batch_size, progress,
                   backend)


def pixel_flipping(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                   features_in_step: int = 1, baseline: float | str | torch.Tensor = "black",
                   activation: str | None = "softmax", batch_size: int | None = None, progress: bool = False,
                   backend: str | None = None) -> CurveResult:
    """Pixel flipping (Bach et al. 2015; Samek et al. 2017, "Evaluating the visualization of what a deep
    neural network has learned"), Quantus' PixelFlipping definition.

    The attributions, broadcast to x's (C, H, W), rank its C * H * W features (ties: pixel by pixel
    in memory order, a pixel's channels together); step k (k = 1 ..
    ceil(C H W / features_in_step)) replaces the first k * features_in_step of them by the baseline
    and scores the copy. With one attribution channel and features_in_step a multiple of C, whole
    pixels flip together. The score is the area under the curve by the trapezoidal rule with unit
    spacing (Quantus' return_auc_per_sample); lower is better.

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W).
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W).
        target: the explained class per image: an int, a LongTensor (B,) or a callable on the output.
        features_in_step: features (elements of x) flipped per step.
        baseline: "black" (each image's minimum over all channels, Quantus' default), "white",
            "mean", a number or a tensor broadcastable to x.
        activation: "softmax" (Quantus' default for this metric) or None.
        batch_size: copies per forward (None: the largest that fits).
        progress: a tqdm bar.
        backend: kernel backend of featvis::apply_masks (pixel steps).

    Returns:
        CurveResult(scores (B,) area under the curve, curves (B, steps)).
    """
    require_target(target, "pixel_flipping")
    step = positive_int(features_in_step, "features_in_step")
    scorer = Scorer(model, x, target, activation=activation, batch_size=batch_size)
    x = scorer.x
    batch, channels, height, width = x.shape
    a = attribution_maps(attributions, x)
    fill = baseline_fill(x, baseline)
    n_steps = math.ceil(channels * height * width / step)
    if a.shape[1] == 1 and step % channels == 0:  # whole pixels: one mask per copy, the fused kernel
        ranks = _descending_ranks(a.reshape(batch, -1)).reshape(batch, height, width)
        pixels = step // channels
        keep = lambda points, images: ranks.index_select(0, images) >= ((points + 1) * pixels)[:, None, None]
        pixel_masks = True
    else:  # ranked in (H, W, C) order: tied pixels flip whole, as on the pixel path above
        hwc = a.expand(batch, channels, height, width).permute(0, 2, 3, 1).reshape(batch, -1)
        ranks = _descending_ranks(hwc).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        keep = lambda points, images: ranks.index_select(0, images) >= ((points + 1) * step)[:, None, None, None]
        pixel_masks = False
    curves = _curve(scorer, keep, fill, n_steps, pixel_masks=pixel_masks, backend=backend, progress=progress,
                    desc="pixel flipping")
    return CurveResult(trapezoid_auc(curves), curves)


def region_perturbation(model: torch.nn.Module, x: torch.Tensor, attributions: object, target: Target, *,
                        patch_size: int = 8, regions: int = 100, order: str = "morf",
                        baseline: float | str | torch.Tensor = "black", activation: str | None = "softmax",
                        batch_size: int | None = None, progress: bool = False,
                        backend: str | None = None) -> CurveResult:
    """Region perturbation (Samek et al. 2017, "Evaluating the visualization of what a deep neural
    network has learned"), Quantus' RegionPerturbation definition.

    The image is tiled into patch_size x patch_size regions (the grid centred: a remainder is split
    over both borders as Quantus pads, floor before and ceil after); regions are ranked by their
    attribution sum (most relevant first for "morf", least for "lerf"); step k replaces the first k
    regions (all channels) by the baseline; the curve is the drop f(x) - f(x_k), k = 1 .. regions.
    The score is the area under it by the trapezoidal rule with unit spacing (Quantus'
    get_auc_score); for MoRF higher is better. AOPC (Samek et al.) is `curves.mean(1)` scaled by
    regions / (regions + 1).

    Args:
        model: the CNN (eval mode).
        x: images (B, C, H, W).
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) (summed over the region and channels).
        target: the explained class per image: an int, a LongTensor (B,) or a callable on the output.
        patch_size: the regions' side in pixels.
        regions: how many regions to perturb (at most the number of regions).
        order: "morf" (most relevant first) or "lerf" (least relevant first).
        baseline: "black" (each image's minimum, Quantus' default), "white", "mean", a number or a
            tensor broadcastable to x.
        activation: "softmax" (Quantus' default for this metric) or None.
        batch_size: copies per forward (None: the largest that fits).
        progress: a tqdm bar.
        backend: kernel backend of featvis::apply_masks.

    Returns:
        CurveResult(scores (B,) area under the curve, curves (B, regions)).
    """
    require_target(target, "region_perturbation")
    patch = positive_int(patch_size, "patch_size")
    regions = positive_int(regions, "regions")
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    scorer = Scorer(model, x, target, activation=activation, batch_size=batch_size)
    x = scorer.x
    batch, _, height, width = x.shape
    if patch > min(height, width):
        raise ValueError(f"patch_size {patch} is larger than the image ({height}, {width})")
    pad_h, pad_w = (-height) % patch, (-width) % patch
    top, left = pad_h // 2, pad_w // 2
    a = pixel_maps(attribution_maps(attributions, x))
    sums = F.avg_pool2d(F.pad(a[:, None], (left, pad_w - left, top, pad_h - top)), patch, divisor_override=1)
    grid_h, grid_w = sums.shape[2:]
    if regions > grid_h * grid_w:
        raise ValueError(f"regions = {regions} exceeds the {grid_h * grid_w} regions of size {patch}")
    ranks = _descending_ranks(sums.reshape(batch, -1) * (1 if order == "morf" else -1))
    pixel_ranks = ranks.reshape(batch, grid_h, grid_w).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    pixel_ranks = pixel_ranks[:, top:top + height, left:left + width].contiguous()
    fill = baseline_fill(x, baseline)
    keep = lambda points, images: pixel_ranks.index_select(0, images) > points[:, None, None]
    perturbed = _curve(scorer, keep, fill, regions, pixel_masks=True, backend=backend, progress=progress,
                       desc="region perturbation")
    curves = scorer.clean[:, None] - perturbed
    return CurveResult(trapezoid_auc(curves), curves)
