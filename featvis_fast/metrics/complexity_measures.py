"""Complexity metrics: how concentrated is an explanation? (no model runs)

Both treat every attribution value as one feature, as Quantus 0.6 does: a (B, C, H, W) map has
C * H * W features (channels are neither summed nor averaged; sum them first to score pixels). Each
returns a (B,) tensor on the attributions' device, float64 for float64 attributions, else float32.

Quantus scales the whole batch by its largest |attribution| first (normalise_by_max over every axis,
the batch included); ours scale each map by its own maximum, so an image's score never depends on
the other images of its batch. The scale matters only to Sparseness, through the 1e-7 that Quantus
adds to every value: per-image and per-batch scaling agree exactly when each map's largest |value|
is the batch's (always for one image).
"""
from __future__ import annotations

import torch

from ._inputs import attribution_maps

SPARSENESS_EPS = 1e-7  # Quantus adds it to every (scaled, absolute) value before the Gini index
COMPLEXITY_EPS = 1e-12  # Quantus' guard inside the logarithm


def sparseness(attributions: object, *, abs: bool = True) -> torch.Tensor:
    """Sparseness (Chalasani et al. 2020, "Concise Explanations of Neural Networks using Adversarial
    Training", ICML): the Gini index of the attribution values, Quantus' Sparseness.

    With the n values scaled by the map's largest |value|, made absolute, raised by 1e-7 and sorted
    ascending (v_1 <= ... <= v_n): Gini = sum_i (2i - n - 1) v_i / (n sum_i v_i). 0 for a constant
    map (and a zero map, which the 1e-7 makes constant), (n - 1) / (n (1 + 1e-7 n)), about 1, for a
    one-hot map: higher is sparser.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        abs: take |attributions| (Quantus' default True).

    Returns:
        (B,) Gini indices.
    """
    a = _features(attributions, abs)
    n = a.shape[1]
    a = torch.sort(a + SPARSENESS_EPS, dim=1).values
    weights = 2 * torch.arange(1, n + 1, device=a.device, dtype=a.dtype) - n - 1
    return (weights * a).sum(1) / (n * a.sum(1))


def complexity(attributions: object, *, abs: bool = True) -> torch.Tensor:
    """Complexity (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model Explanations",
    IJCAI): the entropy of the fractional contributions, Quantus' Complexity.

    With p_i = |a_i| / sum_j |a_j| over the n values: H = -sum_i p_i log(p_i + 1e-12) (natural log).
    0 for a one-hot map (up to the 1e-12), log(n) for a constant map: lower is simpler. A zero map has
    no distribution: NaN, as in Quantus.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) maps, or a list of B maps.
        abs: take |attributions| (Quantus' default True); without it negative values give NaN
            logarithms, as in Quantus.

    Returns:
        (B,) entropies in nats.
    """
    a = _features(attributions, abs)
    p = a / a.abs().sum(1, keepdim=True)  # 0 / 0 = NaN for a zero map
    return -(p * torch.log(p + COMPLEXITY_EPS)).sum(1)


def _features(attributions: object, absolute: bool) -> torch.Tensor:
    """(B, n) attribution values, each map scaled by its largest |value| (zero maps unchanged)."""
    a = attribution_maps(attributions)
    a = a.reshape(a.shape[0], -1)
    peak = a.abs().amax(1, keepdim=True)
    a = a / torch.where(peak == 0, 1, peak)
    return a.abs() if absolute else a
