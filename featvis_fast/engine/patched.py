"""One activation of a batch of occluded copies, held as the clean map plus each copy's changed patch.

The value of copy n is `base[src[n]]` with `patches[n]` pasted at the box `regions` gives it;
everything outside that box equals the unoccluded pass. Tiles for the next layer and the full
maps at the end of the incremental part come from `featvis::gather_patches`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ops import patches as patch_ops
from .changed_regions import Regions, from_boxes


@dataclass(frozen=True)
class Patched:
    """Attributes:
        base: (B, C, H, W) the clean activation of the B images.
        src: (N,) int32 the image of each copy, on base's device.
        regions: the copies' changed boxes in (H, W).
        patches: (N, C, regions.h, regions.w) the copies' values inside them.
        backend: the kernel backend of the gathers.
    """

    base: torch.Tensor
    src: torch.Tensor
    regions: Regions
    patches: torch.Tensor
    backend: str

    @property
    def count(self) -> int:
        return self.src.numel()

    def with_patches(self, patches: torch.Tensor, regions: Regions | None = None,
                     base: torch.Tensor | None = None) -> "Patched":
        return Patched(self.base if base is None else base, self.src, self.regions if regions is None else regions,
                       patches, self.backend)

    def tile(self, tile_y: np.ndarray, tile_x: np.ndarray, tile_h: int, tile_w: int,
             pad: float = 0.0) -> torch.Tensor:
        """(N, C, tile_h, tile_w) each copy's values over the box at (tile_y, tile_x); cells
        outside the map are `pad`."""
        corners = np.stack([tile_y, tile_x, self.regions.y, self.regions.x], axis=1)
        corners = torch.from_numpy(corners.astype(np.int32)).to(self.base.device)
        return patch_ops.gather_patches(self.base, self.src, corners, tile_h, tile_w, self.patches, pad,
                                        self.backend)

    def over(self, regions: Regions) -> torch.Tensor:
        """(N, C, regions.h, regions.w) each copy's values over the given boxes (inside the map)."""
        if regions.same_as(self.regions):
            return self.patches
        return self.tile(regions.y, regions.x, regions.h, regions.w)

    def clean(self) -> torch.Tensor:
        """(N, C, regions.h, regions.w) the clean values under each copy's patch."""
        bare = Patched(self.base, self.src, Regions(self.regions.y, self.regions.x, 0, 0),
                       self.patches[:, :, :0, :0], self.backend)
        return bare.tile(self.regions.y, self.regions.x, self.regions.h, self.regions.w)

    def full(self) -> torch.Tensor:
        """(N, C, H, W) the copies' whole maps, in base's memory format."""
        corners = np.stack([self.regions.y, self.regions.x], axis=1)
        corners = torch.from_numpy(corners.astype(np.int32)).to(self.base.device)
        return patch_ops.scatter_patches(self.base, self.src, corners, self.patches, self.backend)

    def placeholder(self) -> torch.Tensor:
        """A tensor of the copies' shape (N, C, H, W), dtype and device that owns no memory: what
        the model's code holds while the mode keeps this value (it must never be read)."""
        return self.base[:1].expand(self.count, *self.base.shape[1:])


def occluded(site: torch.Tensor, fill: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor,
             backend: str) -> Patched:
    """Copies of `site` with boxes replaced by `fill`, as patches (what featvis::occlude writes in full).

    Args:
        site: (B, C, H, W) the clean images (or a layer's clean activation).
        fill: (B, C, H, W) what the occluded cells become.
        src: (N,) int32 the image of each copy.
        boxes: (N, 6) int32 (y0, y1, x0, x1, c0, c1) the occluded cells of each copy.
        backend: kernel backend.

    Returns:
        the copies, each patch covering its box (boxes at an edge shifted inward to a common size).
    """
    height, width = site.shape[2:]
    b = boxes.cpu().numpy().astype(np.int64)
    regions = from_boxes(b[:, 0], b[:, 1], b[:, 2], b[:, 3], height, width)
    plain = Patched(site, src, Regions(regions.y, regions.x, 0, 0), site.new_empty((src.numel(), site.shape[1], 0, 0)),
                    backend)
    kept = plain.tile(regions.y, regions.x, regions.h, regions.w)
    filled = Patched(fill, src, plain.regions, plain.patches, backend).tile(regions.y, regions.x, regions.h, regions.w)
    dev = site.device
    rows = torch.arange(regions.h, device=dev).view(1, 1, -1, 1) + torch.from_numpy(regions.y).to(dev).view(-1, 1, 1, 1)
    cols = torch.arange(regions.w, device=dev).view(1, 1, 1, -1) + torch.from_numpy(regions.x).to(dev).view(-1, 1, 1, 1)
    chans = torch.arange(site.shape[1], device=dev).view(1, -1, 1, 1)
    bx = boxes.to(dev).long()

    def inside(v, lo, hi):
        return (v >= bx[:, lo].view(-1, 1, 1, 1)) & (v < bx[:, hi].view(-1, 1, 1, 1))

    mask = inside(rows, 0, 1) & inside(cols, 2, 3) & inside(chans, 4, 5)
    return Patched(site, src, regions, torch.where(mask, filled, kept), backend)
