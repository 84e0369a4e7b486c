"""Memory-order views shared by the ops whose kernels work on NCHW or NHWC buffers."""
from __future__ import annotations

import torch


def channels_last(t: torch.Tensor) -> bool:
    """True when t is a 4-D channels-last tensor (not also contiguous): the ops then work in its
    memory order (NHWC)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def memory_order(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """t laid out as requested (copied only if it is not), then viewed in memory order (contiguous)."""
    if cl:
        return t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    return t.contiguous()


def logical(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """A memory-order (N, H, W, C) result viewed back as (N, C, H, W)."""
    return t.permute(0, 3, 1, 2) if cl else t


def memory_format(cl: bool) -> torch.memory_format:
    return torch.channels_last if cl else torch.contiguous_format
