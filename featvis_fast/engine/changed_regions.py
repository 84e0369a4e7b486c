"""Where an occluded window's change reaches in each layer's map: Krypton's projective fields
(Nakandala, Kumar, Papakonstantinou, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations", SIGMOD 2019).

A batch of N windows is described per layer by one `Regions`: window n may differ from the clean
map only inside the box [y[n], y[n] + h) x [x[n], x[n] + w). All boxes of a batch share one size
(the largest any window needs), and a box that would run past the map's edge is shifted inward:
the cells it then takes in are computed from unchanged inputs, so they are exact too, and every
window's patch is one slice of one batched tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Regions:
    """Per-window changed boxes of one (height, width) map.

    Attributes:
        y, x: (N,) int64 top-left corners, inside the map.
        h, w: the boxes' common size (0 when nothing changed).
    """

    y: np.ndarray
    x: np.ndarray
    h: int
    w: int

    @property
    def empty(self) -> bool:
        return self.h == 0 or self.w == 0

    def shifted(self, dy: int, dx: int) -> "Regions":
        """The same boxes in a map padded by dy rows on top and dx columns on the left."""
        return Regions(self.y + dy, self.x + dx, self.h, self.w)

    def same_as(self, other: "Regions") -> bool:
        return self.h == other.h and self.w == other.w and np.array_equal(self.y, other.y) \
            and np.array_equal(self.x, other.x)


def _fit(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """One common length per batch (the longest hi - lo), starts shifted to keep boxes inside [0, size)."""
    length = int(max(int((hi - lo).max(initial=0)), 0))
    return np.clip(np.minimum(lo, size - length), 0, None), length


def from_boxes(y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, height: int,
               width: int) -> Regions:
    """Regions covering half-open boxes (y0, y1, x0, x1), each inside a (height, width) map."""
    y, h = _fit(y0, y1, height)
    x, w = _fit(x0, x1, width)
    return Regions(y, x, h, w)


def union(parts: list[Regions], height: int, width: int) -> Regions:
    """Per window, the smallest box holding each part's box (empty parts count for nothing)."""
    live = [r for r in parts if not r.empty]
    if not live:
        return parts[0]
    y0 = np.minimum.reduce([r.y for r in live])
    x0 = np.minimum.reduce([r.x for r in live])
    y1 = np.maximum.reduce([r.y + r.h for r in live])
    x1 = np.maximum.reduce([r.x + r.w for r in live])
    return from_boxes(y0, y1, x0, x1, height, width)


@dataclass(frozen=True)
class Window:
    """A sliding-window layer (convolution or pooling) along one spatial dimension."""

    kernel: int
    stride: int
    pad: int  # the leading (top or left) padding
    dilation: int

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1


@dataclass(frozen=True)
class Through:
    """A changed input region carried through a sliding-window layer.

    Attributes:
        out: the output's changed regions.
        tile_y, tile_x: (N,) corners of the input tiles (may lie outside the map: padding).
        tile_h, tile_w: the tiles' size; the layer run without padding on a tile gives out's box.
    """

    out: Regions
    tile_y: np.ndarray
    tile_x: np.ndarray
    tile_h: int
    tile_w: int


def _reach(start: np.ndarray, length: int, win: Window, out_size: int) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Output range that input rows [start, start + length) reach, and the input tile computing it."""
    lo = -((-(start + win.pad - win.span + 1)) // win.stride)  # ceil
    hi = (start + length - 1 + win.pad) // win.stride + 1
    lo, hi = np.clip(lo, 0, out_size), np.clip(hi, 0, out_size)
    first, count = _fit(lo, hi, out_size)
    tile = (count - 1) * win.stride + win.span if count else 0
    return first, count, first * win.stride - win.pad, tile


def through(regions: Regions, rows: Window, cols: Window, out_h: int, out_w: int) -> Through:
    """Carry `regions` through a convolution or pooling with windows `rows` x `cols` and an
    (out_h, out_w) output."""
    if regions.empty:
        zeros = np.zeros_like(regions.y)
        return Through(Regions(zeros, zeros, 0, 0), zeros, zeros, 0, 0)
    y, h, ty, th = _reach(regions.y, regions.h, rows, out_h)
    x, w, tx, tw = _reach(regions.x, regions.w, cols, out_w)
    if h == 0 or w == 0:
        zeros = np.zeros_like(regions.y)
        return Through(Regions(zeros, zeros, 0, 0), zeros, zeros, 0, 0)
    return Through(Regions(y, x, h, w), ty, tx, th, tw)
