"""Memory-order views shared by the ops whose kernels work on NCHW or NHWC buffers."""
from __future__ import annotations

import torch


def channels_last(t: torch.Tensor) -> bool:
    """True when t is a 4-D channels-last tensor (not also contiguous): the ops then work in its
    memory order (NHWC)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def contiguous_strides(shape) -> tuple[int, ...]:
    """The strides torch gives a fresh contiguous tensor of this shape (size-0 dims count as 1)."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(int(n), 1)
    return tuple(reversed(strides))


def fresh_strides(x: torch.Tensor) -> tuple[int, ...]:
    """The strides of the output an elementwise torch op (batch norm, ReLU) allocates for x: its
    suggested memory format. A (B, C, 1, 1) map with channels-last strides is also contiguous, so
    torch returns canonical contiguous strides for it, and a convolution reading either layout may
    pick a different kernel (and round differently)."""
    if channels_last(x):
        n, c, h, w = x.shape
        return contiguous_strides((n, h, w, c))[:1] + (1,) + contiguous_strides((n, h, w, c))[1:3]
    return contiguous_strides(x.shape)


def memory_order(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """t laid out as requested (copied only if it is not), then viewed in memory order with
    canonical contiguous strides. A contiguous tensor may carry other strides on size-1
    dimensions (a channels-last (B, C, 1, 1) squeeze-excitation map is also contiguous); the
    kernels compare strides with their freshly allocated outputs, so those are normalized (a view
    of the same memory)."""
    v = t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1) if cl else t.contiguous()
    canonical = contiguous_strides(v.shape)
    if v.stride() != canonical:
        v = v.as_strided(v.shape, canonical, v.storage_offset())
    return v


def logical(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """A memory-order (N, H, W, C) result viewed back as (N, C, H, W)."""
    return t.permute(0, 3, 1, 2) if cl else t


def memory_format(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format
