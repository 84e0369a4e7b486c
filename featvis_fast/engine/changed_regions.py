"""Where an occluded window's change reaches in each layer's map: Krypton's projective fields
(Nakandala, Kumar, Papakonstantinou, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations", SIGMOD 2019).

A batch of N windows is described per layer by one `Regions`: window n may differ from the clean
map only inside its exact extent, and its patch is stored over the box [y[n], y[n] + h) x
[x[n], x[n] + w) that holds it. All boxes of a batch share one size (the largest extent), and a
box that would run past the map's edge is shifted inward, so every window's patch is one slice of
one batched tensor; the cells a box holds beyond the window's extent equal the clean map.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Regions:
    """Per-window changed boxes of one (height, width) map.

    Attributes:
        y, x: (N,) int64 top-left corners of the stored boxes, inside the map.
        h, w: the boxes' common size (0 when nothing changed).
        exact: (N, 4) int64 rows (y0, y1, x0, x1), half-open: where window n's values can really
            differ, inside its box (empty rows: nowhere). None: the boxes themselves.
    """

    y: np.ndarray
    x: np.ndarray
    h: int
    w: int
    exact: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return self.h == 0 or self.w == 0

    def bounds(self) -> np.ndarray:
        """(N, 4) the exact extents (y0, y1, x0, x1)."""
        if self.exact is not None:
            return self.exact
        return np.stack([self.y, self.y + self.h, self.x, self.x + self.w], axis=1)

    def shifted(self, dy: int, dx: int) -> "Regions":
        """The same boxes in a map padded by dy rows on top and dx columns on the left."""
        exact = None if self.exact is None else self.exact + np.array([dy, dy, dx, dx])
        return Regions(self.y + dy, self.x + dx, self.h, self.w, exact)

    def take(self, index: np.ndarray) -> "Regions":
        """The regions of some windows."""
        return Regions(self.y[index], self.x[index], self.h, self.w,
                       None if self.exact is None else self.exact[index])

    def same_as(self, other: "Regions") -> bool:
        """Whether the stored boxes are the same (the exact extents aside)."""
        return self.h == other.h and self.w == other.w and np.array_equal(self.y, other.y) \
            and np.array_equal(self.x, other.x)


def _fit(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """One common length per batch (the longest hi - lo), starts shifted to keep boxes inside [0, size)."""
    length = int(max(int((hi - lo).max(initial=0)), 0))
    return np.clip(np.minimum(lo, size - length), 0, None), length


def _nothing(n_like: np.ndarray) -> Regions:
    zeros = np.zeros_like(n_like)
    return Regions(zeros, zeros, 0, 0)


def from_boxes(y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, height: int,
               width: int) -> Regions:
    """Regions of half-open extents (y0, y1, x0, x1), each inside a (height, width) map (an empty
    extent: a window that changes nothing there)."""
    none = (y1 <= y0) | (x1 <= x0)
    y0, y1, x0, x1 = (np.where(none, 0, v) for v in (y0, y1, x0, x1))
    y, h = _fit(y0, y1, height)
    x, w = _fit(x0, x1, width)
    if h == 0 or w == 0:
        return _nothing(y0)
    return Regions(y, x, h, w, np.stack([y0, y1, x0, x1], axis=1))


def union(parts: list[Regions], height: int, width: int) -> Regions:
    """Per window, the smallest extent holding each part's (empty ones count for nothing)."""
    live = [r for r in parts if not r.empty]
    if not live:
        return parts[0]
    big = np.iinfo(np.int64).max
    lo_y, hi_y, lo_x, hi_x = [], [], [], []
    for r in live:
        b = r.bounds()
        none = (b[:, 1] <= b[:, 0]) | (b[:, 3] <= b[:, 2])  # a window this part leaves unchanged
        lo_y.append(np.where(none, big, b[:, 0]))
        hi_y.append(np.where(none, -big, b[:, 1]))
        lo_x.append(np.where(none, big, b[:, 2]))
        hi_x.append(np.where(none, -big, b[:, 3]))
    y0, y1 = np.minimum.reduce(lo_y), np.maximum.reduce(hi_y)
    x0, x1 = np.minimum.reduce(lo_x), np.maximum.reduce(hi_x)
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

    def reach(self, lo: np.ndarray, hi: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The output range [lo', hi') whose windows read an input cell in [lo, hi)."""
        first = -((-(lo + self.pad - self.span + 1)) // self.stride)  # ceil
        last = (hi - 1 + self.pad) // self.stride + 1
        first, last = np.clip(first, 0, out_size), np.clip(last, 0, out_size)
        return first, np.where(hi > lo, np.maximum(last, first), first)

    def tile(self, count: int) -> int:
        """Input cells that `count` consecutive outputs read."""
        return (count - 1) * self.stride + self.span if count else 0


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


def through(regions: Regions, rows: Window, cols: Window, out_h: int, out_w: int) -> Through:
    """Carry `regions` through a convolution or pooling with windows `rows` x `cols` and an
    (out_h, out_w) output."""
    if regions.empty:
        nothing = _nothing(regions.y)
        return Through(nothing, nothing.y, nothing.x, 0, 0)
    b = regions.bounds()
    y0, y1 = rows.reach(b[:, 0], b[:, 1], out_h)
    x0, x1 = cols.reach(b[:, 2], b[:, 3], out_w)
    out = from_boxes(y0, y1, x0, x1, out_h, out_w)
    return Through(out, out.y * rows.stride - rows.pad, out.x * cols.stride - cols.pad, rows.tile(out.h),
                   cols.tile(out.w))
