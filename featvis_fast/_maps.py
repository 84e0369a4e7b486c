"""Resizing (B, h, w) attribution maps to the input's size, shared by the CAM methods of every family."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_maps(maps: torch.Tensor, size, mode: str) -> torch.Tensor:
    """(B, h, w) -> (B, *size) by "bilinear" (align_corners=False) or "nearest" interpolation."""
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, **kwargs)[:, 0]


def upsample_maps(maps: torch.Tensor, size, upsample: bool | str) -> torch.Tensor:
    """(B, h, w) maps unchanged (upsample False) or resized to size: True / "bilinear" or "nearest"."""
    if not upsample:
        return maps
    if upsample is not True and upsample not in ("bilinear", "nearest"):
        raise ValueError(f"upsample must be False, True, 'bilinear' or 'nearest', got {upsample!r}")
    return resize_maps(maps, size, "bilinear" if upsample is True else upsample)
