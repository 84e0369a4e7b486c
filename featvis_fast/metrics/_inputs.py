"""Checks shared by the metrics: attributions against their images, the target, random generators.

Attributions come from any method of this package or any tensor: (B, H, W), (B, 1, H, W) or
(B, C, H, W) like x, a NumPy array, or a list of per-image maps (what a loop over images collects).
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.class_scores import score_dtype


def attribution_maps(attributions: object, x: torch.Tensor | None = None, *, name: str = "attributions",
                     batch: int | None = None) -> torch.Tensor:
    """Attributions as a (B, Ca, H, W) tensor, Ca = 1 or x's C, on x's device in its score precision.

    Args:
        attributions: (B, H, W), (B, 1, H, W) or (B, C, H, W) tensor or array, or a list of B maps
            (H, W), (1, H, W) or (C, H, W).
        x: the explained images (B, C, H, W); None for metrics that never see the images.
        name: the argument's name in error messages.
        batch: the batch size expected when x is None.

    Returns:
        a finite floating tensor (B, Ca, H, W): float64 when x (or, without x, the attributions)
        is float64, else float32.
    """
    if isinstance(attributions, (list, tuple)):
        if not attributions:
            raise ValueError(f"{name} is an empty list")
        attributions = torch.stack([torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
                                    for a in attributions])
    elif isinstance(attributions, np.ndarray):
        attributions = torch.from_numpy(attributions)
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, an array or a list of per-image maps, "
                        f"got {type(attributions).__name__}")
    a = attributions.detach()
    if a.dim() == 3:
        a = a[:, None]
    if a.dim() != 4:
        raise ValueError(f"{name} must be (B, H, W), (B, 1, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    if x is not None:
        b, c, h, w = x.shape
        if a.shape[0] != b or a.shape[2:] != (h, w) or a.shape[1] not in (1, c):
            raise ValueError(f"{name} of shape {tuple(attributions.shape)} do not fit the images {tuple(x.shape)}: "
                             f"expected ({b}, {h}, {w}), ({b}, 1, {h}, {w}) or ({b}, {c}, {h}, {w})")
        dtype, device = score_dtype(x), x.device
    else:
        if batch is not None and a.shape[0] != batch:
            raise ValueError(f"{name} hold {a.shape[0]} maps for a batch of {batch}")
        dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
        device = a.device
    if a.shape[0] == 0 or a.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(a.shape)}")
    if not (a.is_floating_point() or a.dtype in (torch.bool, torch.uint8, torch.int32, torch.int64)):
        raise TypeError(f"{name} must be real numbers, got {a.dtype}")
    a = a.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name} contain NaN or infinite values")
    return a


def pixel_maps(a: torch.Tensor) -> torch.Tensor:
    """(B, Ca, H, W) attributions -> (B, H, W): the sum over channels (one value per pixel)."""
    return a.sum(dim=1)


def require_target(target: object, metric: str) -> None:
    """A clear error for a model metric called without a target."""
    if target is None:
        raise ValueError(f"{metric} needs a target: an int class, a LongTensor (B,) of classes or a callable "
                         "on the output (for the predicted class pass model(x).argmax(1))")


def generator_for(seed: int, generator: torch.Generator | None) -> torch.Generator:
    """The generator random draws come from: `generator` when given, else a CPU one seeded with `seed`."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (draws are made on the CPU, then moved to "
                             f"the input's device, so a seed gives the same numbers on any device), got one on "
                             f"{generator.device}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def trapezoid_auc(curves: torch.Tensor, spacing: float = 1.0) -> torch.Tensor:
    """Area under (..., K) curves by the trapezoidal rule with `spacing` between points."""
    if curves.shape[-1] < 2:
        return torch.zeros(curves.shape[:-1], dtype=curves.dtype, device=curves.device)
    return spacing * (curves.sum(-1) - 0.5 * (curves[..., 0] + curves[..., -1]))



def normalise_by_max(a: torch.Tensor) -> torch.Tensor:
    """Each map (N, Ca, H, W) divided by its own largest |value| (all-zero maps stay zero): Quantus'
    normalise_by_max per image (its default divides a whole batch by the batch's largest value).

    Args:
        a: (N, Ca, H, W) maps.

    Returns:
        (N, Ca, H, W) maps in [-1, 1].
    """
    largest = a.abs().amax(dim=(1, 2, 3), keepdim=True)
    return a / torch.where(largest == 0, torch.ones_like(largest), largest)


def prepared(a: torch.Tensor, normalise: bool, absolute: bool) -> torch.Tensor:
    """Quantus' attribution preprocessing: normalise_by_max (optional), then |a| (optional)."""
    if normalise:
        a = normalise_by_max(a)
    return a.abs() if absolute else a


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last (and not also contiguous) tensor, else contiguous_format:
    the layout perturbed copies of x are written in, so the model sees the layout it was given."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format
