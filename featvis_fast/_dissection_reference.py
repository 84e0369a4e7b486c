"""Plain PyTorch reference of the Network Dissection tally (Bau et al. 2017): the `torch`
backend, the test oracle and the benchmark baseline of `featvis::dissect_tally`. Semantics here
define what every backend computes.

dissect_tally(acts, thresholds, labels, annotated) -> (intersection, unit_area, label_area)
    acts        (B, U, h, w) float32 activations of U units
    thresholds  (U,) float64, one per unit
    labels      (B, K, H, W) bool masks of K concepts at the label resolution
    annotated   (B, K) bool: concept k's category is annotated in image b
    up[b, u]  = acts[b, u] upsampled bilinearly to (H, W) in float64 with PyTorch's
                align_corners=False rule: for an output row y, src = (y + 0.5) * h / H - 0.5,
                clamped at 0; y0 = floor(src), y1 = min(y0 + 1, h - 1), wy = src - y0 (likewise for
                columns); up = (1 - wy) ((1 - wx) a[y0, x0] + wx a[y0, x1]) + wy ((1 - wx) a[y1, x0] + wx a[y1, x1])
    m[b, u]   = up[b, u] > thresholds[u]
    intersection[u, k] = sum over images b with annotated[b, k] of |m[b, u] & labels[b, k]|
    unit_area[u, k]    = sum over images b with annotated[b, k] of |m[b, u]|
    label_area[k]      = sum over images b with annotated[b, k] of |labels[b, k]|
All three are int64 counts (exact). IoU[u, k] = intersection / (unit_area + label_area - intersection).
"""
from __future__ import annotations

import torch


def source_index(out_size: int, in_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i0, i1, w1) per output index, float64 weights: PyTorch's align_corners=False bilinear rule."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    return i0, i1, src - i0.double()


def upsample(acts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, U, h, w) -> (B, U, H, W) float64, bilinear as in the module docstring."""
    a = acts.double()
    y0, y1, wy = source_index(height, a.shape[-2], a.device)
    x0, x1, wx = source_index(width, a.shape[-1], a.device)
    rows = a[..., y0, :] * (1 - wy)[:, None] + a[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def dissect_tally(acts: torch.Tensor, thresholds: torch.Tensor, labels: torch.Tensor,
                  annotated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, w = labels.shape[-2:]
    m = (upsample(acts, h, w) > thresholds.double().view(1, -1, 1, 1)).flatten(2).double()  # (B, U, P)
    lab = labels.flatten(2).double() * annotated.double()[..., None]  # (B, K, P), zero where not annotated
    intersection = torch.einsum("bup,bkp->uk", m, lab)
    unit_area = torch.einsum("bu,bk->uk", m.sum(2), annotated.double())
    label_area = lab.sum(dim=(0, 2))
    return intersection.round().long(), unit_area.round().long(), label_area.round().long()


def iou(intersection: torch.Tensor, unit_area: torch.Tensor, label_area: torch.Tensor) -> torch.Tensor:
    """(U, K) float64 IoU; 0 where the union is empty."""
    union = unit_area + label_area.view(1, -1) - intersection
    return torch.where(union > 0, intersection.double() / union.clamp_min(1).double(),
                       torch.zeros((), dtype=torch.float64))


def top_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """(U,) float64: per row of values (U, n), numpy.quantile(row, 1 - q) (linear interpolation)."""
    return torch.quantile(values.double(), 1.0 - q, dim=1, interpolation="linear")
