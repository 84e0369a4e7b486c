"""Localisation metrics: does an explanation point at the object? (no model runs)

Each metric compares one attribution map per image with the object's region, given as masks or
boxes (featvis_fast.metrics.regions: boxes are (x0, y0, x1, y1) pixels, x1 and y1 exclusive; several
boxes of an image mean their union). Multi-channel attributions (B, C, H, W) are summed over channels
first (one value per pixel). Every metric returns a (B,) tensor on the attributions' device (float64
for float64 attributions, else float32), NaN for an image whose region is empty.

Quantus 0.6 (PointingGame, AttributionLocalisation, TopKIntersection) scales the whole batch by its
largest |attribution| before scoring; these scores do not depend on a positive scale except through
AttributionLocalisation's 1e-9 guard, so ours scale each image by its own maximum and an image's score
never depends on the other images of its batch.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .._validate import check_choice
from ._inputs import attribution_maps, pixel_maps
from .regions import region_masks

TIES = ("first", "any")


def pointing_game(attributions: object, boxes_or_masks: object, tolerance: int = 15, *, ties: str = "first",
                  weighted: bool = False) -> torch.Tensor:
    """Pointing game (Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop", IJCV).

    The map's maximum is a hit when it lies within `tolerance` pixels of the object: some object pixel
    is at a Euclidean distance strictly below `tolerance` from it (the object mask dilated by an open
    disk of that radius), TorchRay's PointingGame protocol. `tolerance=0` asks that the maximum lies on
    the object itself (Quantus' PointingGame, which has no tolerance; TorchRay's strict test would
    accept no point at 0).

    Among tied maxima, `ties="first"` points at the first in row-major order (TorchRay's benchmark
    takes `argmax` of the flattened map, which returns the first maximum) and `ties="any"` counts a hit
    when any of them is near the object (Quantus: a constant map then hits every non-empty object).

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        boxes_or_masks: the object of each image: masks (B, H, W) / (B, 1, H, W), boxes (B, 4) or a
            list of per-image masks, boxes or lists of boxes (featvis_fast.metrics.regions).
        tolerance: the acceptance radius in pixels (TorchRay's default 15).
        ties: "first" or "any" (above).
        weighted: scale a hit by 1 - object area / image area (Quantus' `weighted` option as its
            docstring means it: a hit on a large object counts less; Quantus 0.6 raises a TypeError).

    Returns:
        (B,) scores: 1 for a hit, 0 for a miss (times the weight with `weighted`), NaN for an empty object.
    """
    a, masks = _maps_and_regions(attributions, boxes_or_masks)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0 (pixels), got {tolerance!r}")
    check_choice("ties", ties, TIES)
    b, h, w = a.shape
    flat = a.reshape(b, -1)
    radius2 = max(tolerance * tolerance, 1)  # squared distances are integers: < 1 means the pixel itself
    if ties == "first":
        peak = flat.argmax(1)
        rows = torch.arange(h, device=a.device)[None, :, None] - (peak // w)[:, None, None]
        cols = torch.arange(w, device=a.device)[None, None, :] - (peak % w)[:, None, None]
        hit = (masks & (rows * rows + cols * cols < radius2)).reshape(b, -1).any(1)
    else:
        peaks = flat == flat.amax(1, keepdim=True)
        hit = (peaks & _dilate(masks, tolerance).reshape(b, -1)).any(1)
    area = masks.reshape(b, -1).sum(1)
    score = hit.to(a.dtype)
    if weighted:
        score = score * (1 - area.to(a.dtype) / (h * w))
    return torch.where(area == 0, torch.nan, score)


def energy_pointing_game(attributions: object, boxes_or_masks: object) -> torch.Tensor:
    """Energy-based pointing game (Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks", CVPR workshops): the share of the map's energy inside the object.

    score = sum over the object of max(a, 0) / sum over the image of max(a, 0). Negative attributions
    count as no energy: Score-CAM's maps are non-negative, and a signed map's negative evidence would
    let the ratio leave [0, 1]. The same as `attribution_localisation(..., abs=False,
    positive_attributions=True)` without its 1e-9 guard.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        boxes_or_masks: the object of each image (see `pointing_game`).

    Returns:
        (B,) shares in [0, 1]; NaN for an empty object or a map without positive values.
    """
    a, masks = _maps_and_regions(attributions, boxes_or_masks)
    energy = a.clamp_min(0)
    inside = (energy * masks).sum((1, 2))
    score = inside / energy.sum((1, 2))  # 0 / 0 = NaN for a map without positive energy
    return torch.where(masks.flatten(1).any(1), score, torch.nan)


def attribution_localisation(attributions: object, boxes_or_masks: object, *, weighted: bool = False,
                             max_size: float = 1.0, positive_attributions: bool = False,
                             abs: bool = True) -> torch.Tensor:
    """Attribution localisation (Kohlbrenner et al. 2020, "Towards Best Practice in Explaining Neural
    Network Decisions with LRP", IJCNN): the inside-total relevance ratio, Quantus' AttributionLocalisation.

    Each map is scaled by its largest |value| (Quantus: by the batch's), then made absolute (`abs`)
    and clipped at 0 (`positive_attributions`), and
    score = sum over the object / (sum over the image + 1e-9). Ratios above 1 (possible with signed
    maps) are NaN, as in Quantus.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        boxes_or_masks: the object of each image (see `pointing_game`).
        weighted: multiply the ratio by the object's share of the image (area / (H * W)). Quantus 0.6
            divides the area by `x_batch[2:].size`, the size of the batch minus its first two images
            (a slicing bug), so its weighted scores differ from these by that constant factor.
        max_size: warn when an object covers more than this share of its image (Quantus warns too;
            the ratio is less informative for large objects).
        positive_attributions: keep only positive attributions (after `abs`).
        abs: take |attributions| first (Quantus' default).

    Returns:
        (B,) ratios; NaN for an empty object or a ratio above 1.
    """
    a, masks = _maps_and_regions(attributions, boxes_or_masks)
    b, h, w = a.shape
    a = _scaled_by_max(a)
    if abs:
        a = a.abs()
    if positive_attributions:
        a = a.clamp_min(0)
    area = masks.reshape(b, -1).sum(1)
    share = area.to(a.dtype) / (h * w)
    large = share > max_size
    if bool(large.any()):
        warnings.warn(f"attribution_localisation: the objects of images {large.nonzero().flatten().tolist()} cover "
                      f"more than max_size = {max_size} of the image; the ratio says less for large objects",
                      UserWarning, stacklevel=2)
    ratio = (a * masks).sum((1, 2)) / (a.sum((1, 2)) + 1e-9)
    ratio = torch.where((area == 0) | (ratio > 1), torch.nan, ratio)
    return ratio * share if weighted else ratio


def top_k_intersection(attributions: object, boxes_or_masks: object, k: int = 1000, *,
                       concept_influence: bool = False, abs: bool = False) -> torch.Tensor:
    """Top-k intersection (Theiner et al. 2021, "Interpretable Semantic Photo Geolocation", arXiv:2104.14995):
    the share of the k most attributed pixels that lie on the object, Quantus' TopKIntersection.

    Ties among the k-th largest values go to the earlier pixel in row-major order (a stable sort);
    Quantus ranks with NumPy's default quicksort, whose tie order is arbitrary.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        boxes_or_masks: the object of each image (see `pointing_game`).
        k: how many pixels to take, 1 <= k <= H * W (Quantus asks k < H * W).
        concept_influence: divide by the object's share of the image (H * W / area): 1 means the top
            pixels hit the object as often as uniformly random pixels would.
        abs: rank |attributions| (Quantus' default False).

    Returns:
        (B,) shares in [0, 1] (up to H * W / area with `concept_influence`); NaN for an empty object.
    """
    a, masks = _maps_and_regions(attributions, boxes_or_masks)
    b, h, w = a.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= h * w:
        raise ValueError(f"k must be an int in [1, H * W] = [1, {h * w}], got {k!r}")
    flat = a.reshape(b, -1)
    if abs:
        flat = flat.abs()
    flat_masks = masks.reshape(b, -1)
    score = (_top_k_members(flat, k) & flat_masks).sum(1).to(a.dtype) / k
    area = flat_masks.sum(1)
    if concept_influence:
        score = score * (h * w) / area.to(a.dtype)
    return torch.where(area == 0, torch.nan, score)


def _top_k_members(flat: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) -> (B, N) bool: the k largest values per row, ties at the k-th value going to the earlier
    index (what a stable descending sort's first k are), by a top-k threshold instead of a full sort."""
    kth = torch.topk(flat, k, dim=1).values[:, -1:]
    above = flat > kth
    tied = flat == kth
    room = k - above.sum(1, keepdim=True)
    return above | (tied & (tied.cumsum(1) <= room))


def _maps_and_regions(attributions: object, boxes_or_masks: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W) pixel attributions (channel sums) and (B, H, W) bool object masks on their device."""
    a = pixel_maps(attribution_maps(attributions))
    b, h, w = a.shape
    return a, region_masks(boxes_or_masks, b, h, w, device=a.device)


def _scaled_by_max(a: torch.Tensor) -> torch.Tensor:
    """Each map divided by its largest |value| (Quantus' normalise_by_max, per image); zero maps unchanged."""
    peak = a.abs().amax(dim=tuple(range(1, a.dim())), keepdim=True)
    return a / torch.where(peak == 0, 1, peak)


def _dilate(masks: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(B, H, W) masks grown by the open disk of radius `tolerance` (the pixel itself at 0)."""
    if tolerance <= 1:
        return masks
    offsets = torch.arange(-tolerance, tolerance + 1, device=masks.device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 < tolerance * tolerance).to(torch.float32)
    grown = F.conv2d(masks[:, None].to(torch.float32), disk[None, None], padding=tolerance)
    return grown[:, 0] > 0.5
