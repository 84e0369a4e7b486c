"""Similarities between attribution maps, batched: SSIM (skimage's, on the maps or on Quantus'
flattened maps) and Spearman's rank correlation (average ranks for ties, as scipy). The randomisation
metrics compare explanations with them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._validate import check_choice

SIMILARITIES = ("spearman", "ssim", "ssim_flattened")
SSIM_WINDOW = 7  # skimage's default window (uniform weights), what Quantus' ssim gets
SSIM_K1, SSIM_K2 = 0.01, 0.03


def structural_similarity(a: torch.Tensor, b: torch.Tensor, *, flattened: bool = False,
                          window: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean SSIM of pairs of maps (Wang et al. 2004), skimage's structural_similarity as Quantus calls it.

    Uniform window, sample covariances (N - 1), K1 = 0.01, K2 = 0.03, and data_range the spread of
    each pair's values together (max - min over both maps, Quantus' choice); the mean runs over the
    windows that lie inside the map (skimage crops the border its padding touches). Computed in
    float64. A pair of equal constant maps has data_range 0 and gives NaN, as skimage does.

    Args:
        a: (N, C, H, W) maps.
        b: (N, C, H, W) maps.
        flattened: False: the 2-D SSIM of each channel's (H, W) map (window x window), averaged over
            the channels (skimage with channel_axis). True: the 1-D SSIM of each pair's flattened
            C * H * W values (a window of `window` consecutive values), what Quantus' ssim computes.
        window: the odd window side.

    Returns:
        (N,) float64 SSIMs on a's device.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"SSIM compares two (N, C, H, W) batches of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"the SSIM window must be an odd int >= 1, got {window!r}")
    n, c, h, w = a.shape
    if (flattened and c * h * w < window) or (not flattened and min(h, w) < window):
        extent = f"{c * h * w} values" if flattened else f"{h} x {w} pixels"
        raise ValueError(f"SSIM's {window}-wide window does not fit maps of {extent}: use larger maps or "
                         "similarity='spearman'")
    a, b = a.to(torch.float64), b.to(torch.float64)
    both = torch.cat([a.reshape(n, -1), b.reshape(n, -1)], dim=1)
    data_range = both.amax(dim=1) - both.amin(dim=1)
    if flattened:
        a, b = a.reshape(n, 1, -1), b.reshape(n, 1, -1)
        mean = lambda t: F.avg_pool1d(t, window, stride=1)
        values = window
    else:
        a, b = a.reshape(n * c, 1, h, w), b.reshape(n * c, 1, h, w)
        data_range = data_range.repeat_interleave(c)
        mean = lambda t: F.avg_pool2d(t, window, stride=1)
        values = window * window
    cov_norm = values / (values - 1) if values > 1 else 1.0
    mu_a, mu_b = mean(a), mean(b)
    var_a = cov_norm * (mean(a * a) - mu_a * mu_a)
    var_b = cov_norm * (mean(b * b) - mu_b * mu_b)
    cov = cov_norm * (mean(a * b) - mu_a * mu_b)
    c1 = ((SSIM_K1 * data_range) ** 2).reshape(-1, 1, *([1] * (a.dim() - 2)))
    c2 = ((SSIM_K2 * data_range) ** 2).reshape_as(c1)
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    per_map = ssim_map.flatten(1).mean(dim=1)
    return per_map if flattened else per_map.reshape(n, c).mean(dim=1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of each row's values, tied values getting their mean rank (scipy.stats.rankdata's 'average').

    Args:
        values: (N, F) rows.

    Returns:
        (N, F) float64 ranks 1..F.
    """
    n, f = values.shape
    ordered, order = torch.sort(values, dim=1)
    position = torch.arange(f, device=values.device).expand(n, f)
    starts = torch.ones(n, f, dtype=torch.bool, device=values.device)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values
    last = torch.where(ends, position, f).flip(1).cummin(dim=1).values.flip(1)
    ranks = torch.empty(n, f, dtype=torch.float64, device=values.device)
    return ranks.scatter_(1, order, (first + last).to(torch.float64) / 2 + 1)


def spearman_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each pair of maps over all their values (scipy.stats.spearmanr,
    ties ranked by their mean rank). A constant map gives NaN, as scipy does.

    Args:
        a: (N, ...) maps.
        b: (N, ...) maps of a's shape.

    Returns:
        (N,) float64 correlations in [-1, 1] on a's device.
    """
    if a.shape != b.shape:
        raise ValueError(f"Spearman's correlation compares two batches of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    ra, rb = average_ranks(a.reshape(a.shape[0], -1)), average_ranks(b.reshape(b.shape[0], -1))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    r = (ra * rb).sum(dim=1) / torch.sqrt((ra * ra).sum(dim=1) * (rb * rb).sum(dim=1))
    return r.clamp(-1.0, 1.0)  # as np.corrcoef clips


def similarity_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    check_choice("similarity", name, SIMILARITIES)
    if name == "spearman":
        return spearman_correlation
    return lambda a, b: structural_similarity(a, b, flattened=name == "ssim_flattened")
