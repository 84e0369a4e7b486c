"""Which memory layout a model runs its inputs in: the one place that chooses it.

4-D inputs on the CPU go channels-last: oneDNN's convolutions are faster in it (plain autograd
forward + backward: 5-17% on a 2-core machine), and the rectifier kernels work in memory order
in either layout. A model that calls .view() on activations cannot take that layout; torch then
raises a RuntimeError with VIEW_ERROR in its text, and the pass runs again contiguous.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

# what torch says when a model .view()s an activation that channels-last memory cannot view
VIEW_ERROR = "view size is not compatible with input tensor's size and stride"


def prefers_channels_last(x: torch.Tensor) -> bool:
    """Whether x (B, C, H, W) should run channels-last: 4-D and on the CPU."""
    return x.dim() == 4 and x.device.type == "cpu"


def is_layout_error(exc: BaseException) -> bool:
    """Whether exc is torch refusing to .view() a channels-last activation (then: run contiguous)."""
    return isinstance(exc, RuntimeError) and VIEW_ERROR in str(exc)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) as a channels-last tensor (a copy unless it already is one); other ranks as
    they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def as_is(x: torch.Tensor) -> torch.Tensor:
    """x unchanged (a model run in the layout its input comes in)."""
    return x


def contiguous(x: torch.Tensor) -> torch.Tensor:
    """x as a contiguous (row-major) tensor: the layout every model can take."""
    return x.contiguous()


def run_in_best_layout(run: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
    """run(x laid out for speed): channels-last where prefers_channels_last(x), and again
    contiguous if the model cannot take it.

    Args:
        run: the pass, given x in the chosen layout; it may be called twice (its side effects too).
        x: the input, any layout.

    Returns:
        What run returns.
    """
    if not prefers_channels_last(x):
        return run(contiguous(x))
    try:
        return run(channels_last(x))
    except RuntimeError as exc:
        if not is_layout_error(exc):
            raise
    return run(contiguous(x))


def best_layout(x: torch.Tensor, probe: Callable[[torch.Tensor], object]) -> torch.Tensor:
    """x in the layout the model takes fastest, found by trying probe(x channels-last) once.

    Args:
        x: the input, any layout.
        probe: a pass over the model (its result is dropped).

    Returns:
        x channels-last, or contiguous when x should not or the model cannot run channels-last.
    """
    if not prefers_channels_last(x):
        return contiguous(x)
    laid_out = channels_last(x)
    try:
        probe(laid_out)
    except RuntimeError as exc:
        if not is_layout_error(exc):
            raise
        return contiguous(x)
    return laid_out
