"""Plain PyTorch reference of the patch kernels (exact incremental occlusion): the `torch` backend,
the test oracle and the benchmark baseline. Semantics here define what every backend computes.

Exact incremental occlusion (Krypton, Nakandala et al., SIGMOD 2019): an occluded window changes
only a region of each layer's activation. Per layer we hold the clean activation `base`
(B, C, H, W) of the unoccluded images and, per window n, the changed patch (N, C, ph, pw) at
(patch_y[n], patch_x[n]). To compute the next layer only on the changed region, each window
gathers a tile of its activation with the patch pasted in (a tile may reach past the map's edge:
padding); at the end of the incremental part the patches are scattered into full maps (a tile
that is the whole map, op layer's `scatter_patches`).

gather_patches(base, src, corners, tile_h, tile_w, patches, pad) -> (N, C, tile_h, tile_w)
    corners (N, 4) int32 rows (tile_y, tile_x, patch_y, patch_x); src (N,) int32 picks the image.
    out[n, c, i, j], with y = tile_y[n] + i and x = tile_x[n] + j, is
      patches[n, c, y - patch_y[n], x - patch_x[n]]  inside the patch box
                                                     (patch_y <= y < patch_y + ph, same for x),
      else base[src[n], c, y, x]                     inside the map (0 <= y < H, 0 <= x < W),
      else pad                                       (converted to base's dtype, `pad_value`).
    ph or pw may be 0 (no patch: a plain gather); the patch box lies inside the map; tiles may
    lie partly or wholly outside it. A pure copy: every backend is bitwise equal to this.
"""
from __future__ import annotations

import torch

CORNER_FIELDS = 4  # tile_y, tile_x, patch_y, patch_x


def pad_value(pad: float, dtype: torch.dtype) -> float:
    """`pad` as a `dtype` tensor stores it (PyTorch's conversion), as a Python float: exactly
    representable in dtype, so every backend's own conversion of it is exact."""
    return torch.tensor(pad, dtype=torch.float64).to(dtype).item()


def gather_patches(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, tile_h: int, tile_w: int,
                   patches: torch.Tensor, pad: float) -> torch.Tensor:
    n = src.numel()
    _, c, h, w = base.shape
    ph, pw = patches.shape[2:]
    device = base.device
    out = torch.full((n, c, tile_h, tile_w), pad_value(pad, base.dtype), dtype=base.dtype, device=device)
    if out.numel() == 0:
        return out
    k = corners.to(device=device, dtype=torch.int64)
    ys = k[:, 0:1] + torch.arange(tile_h, device=device)  # (N, tile_h) map rows of the tile
    xs = k[:, 1:2] + torch.arange(tile_w, device=device)  # (N, tile_w) map columns
    if h and w:
        inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
        # advanced indices around a slice: the result is (N, tile_h, tile_w, C)
        vals = base[src.to(device).long()[:, None, None], :, ys.clamp(0, h - 1)[:, :, None],
                    xs.clamp(0, w - 1)[:, None, :]]
        out = torch.where(inside[:, None], vals.permute(0, 3, 1, 2), out)
    if ph and pw:
        ry, rx = ys - k[:, 2:3], xs - k[:, 3:4]  # patch rows / columns
        in_patch = ((ry >= 0) & (ry < ph))[:, :, None] & ((rx >= 0) & (rx < pw))[:, None, :]
        vals = patches[torch.arange(n, device=device)[:, None, None], :, ry.clamp(0, ph - 1)[:, :, None],
                       rx.clamp(0, pw - 1)[:, None, :]]
        out = torch.where(in_patch[:, None], vals.permute(0, 3, 1, 2), out)
    return out.contiguous()
