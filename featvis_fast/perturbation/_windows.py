"""Occlusion windows: parsing window/stride specs and laying the windows over an image.

A spec is a window (h, w) and a stride (sh, sw); several specs can be given at once. Positions:
  "inside"   Captum's Occlusion: windows start at 0, sh, 2*sh, ... while the previous one has
             not reached the end (ceil((H - h) / sh) + 1 positions); the last one is cropped.
  "overhang" FeatureVis: every window that overlaps the image, starting at sh - h + 1 (partly
             outside on every border), so each pixel is covered by the same number of windows.
Windows are returned cropped to the image as (y0, y1, x0, x1), half-open.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

POSITIONS = ("inside", "overhang")


@dataclass(frozen=True)
class WindowSpec:
    height: int
    width: int
    stride_h: int
    stride_w: int


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     for v in value)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def parse_specs(window, stride, height: int, width: int) -> list[WindowSpec]:
    """window / stride: an int, an (h, w) pair, or a list of them (one stride per window; a
    single stride is used for every window; None: the window's own size)."""
    windows = list(window) if isinstance(window, list) else [window]
    if not windows:
        raise ValueError("window must name at least one window size")
    strides = list(stride) if isinstance(stride, list) else [stride] * len(windows)
    if len(strides) != len(windows):
        raise ValueError(f"{len(windows)} windows but {len(strides)} strides")
    specs = []
    for w, s in zip(windows, strides):
        wh, ww = _pair(w, "window")
        sh, sw = _pair(w if s is None else s, "stride")
        if wh <= 0 or ww <= 0:
            raise ValueError(f"window sizes must be positive, got {(wh, ww)}")
        if sh <= 0 or sw <= 0:
            raise ValueError(f"strides must be positive, got {(sh, sw)}")
        if wh > height or ww > width:
            raise ValueError(f"window {(wh, ww)} is larger than the image ({height}, {width})")
        specs.append(WindowSpec(wh, ww, sh, sw))
    return specs


def _starts(size: int, window: int, stride: int, positions: str) -> list[int]:
    if positions == "inside":
        return [k * stride for k in range(math.ceil(max(size - window, 0) / stride) + 1)]
    return list(range(stride - window, size - stride + 1, stride)) or [0]


def boxes_for(spec: WindowSpec, height: int, width: int, positions: str) -> torch.Tensor:
    """(K, 4) int32 windows (y0, y1, x0, x1) of one spec, cropped to the image, row-major."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    rows = [(max(y, 0), min(y + spec.height, height)) for y in _starts(height, spec.height, spec.stride_h, positions)]
    cols = [(max(x, 0), min(x + spec.width, width)) for x in _starts(width, spec.width, spec.stride_w, positions)]
    return torch.tensor([(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols if y1 > y0 and x1 > x0],
                        dtype=torch.int32)
