"""Plain PyTorch reference of the perturbation kernels (occlusion, RISE): the `torch` backend, the
test oracle and the benchmark baseline. Semantics here define what every backend computes.

occlude(x, fill, src, boxes) -> (N, C, H, W)
    out[n] = x[src[n]], except inside boxes[n] = (y0, y1, x0, x1, c0, c1) (half-open, inside the
    image) where out[n, c, y, x] = fill[src[n], c, y, x]. x, fill: (B, C, H, W).
box_accumulate(values, src, boxes, batch, planes, H, W) -> (sums, counts), each (batch, planes, H, W) fp32
    sums[src[n], p, y, x] += values[n] and counts[...] += 1 for every (p, y, x) in boxes[n] with
    planes p in [c0, c1) (planes = 1 with (c0, c1) = (0, 1) for one map per image).
rise_masks(grid, shifts, H, W) -> (N, H, W) fp32  (Petsiuk et al. 2018, RISE)
    grid (N, s_h, s_w) cell values upsampled bilinearly (PyTorch's align_corners=False rule) to
    ((s_h + 1) * ceil(H / s_h), (s_w + 1) * ceil(W / s_w)), then cropped to H x W at
    shifts[n] = (dy, dx).
apply_masks(x, fill, masks, src) -> (N, C, H, W)
    out[n] = x[src[n]] * masks[n] + fill[src[n]] * (1 - masks[n]) (RISE's x * m when fill is 0).

Outputs of occlude and apply_masks follow x's layout (channels-last in, channels-last out).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BOX_FIELDS = 6  # y0, y1, x0, x1, c0, c1


def occlude(x: torch.Tensor, fill: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    out = x.index_select(0, src.long())
    fills = fill.index_select(0, src.long())
    for n, (y0, y1, x0, x1, c0, c1) in enumerate(boxes.tolist()):
        out[n, c0:c1, y0:y1, x0:x1] = fills[n, c0:c1, y0:y1, x0:x1]
    return out


def box_accumulate(values: torch.Tensor, src: torch.Tensor, boxes: torch.Tensor, batch: int, planes: int,
                   height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(batch, planes, height, width, dtype=torch.float64, device=values.device)
    counts = torch.zeros_like(sums)
    for v, b, (y0, y1, x0, x1, c0, c1) in zip(values.double().tolist(), src.tolist(), boxes.tolist()):
        sums[b, c0:c1, y0:y1, x0:x1] += v
        counts[b, c0:c1, y0:y1, x0:x1] += 1
    out = torch.float64 if values.dtype == torch.float64 else torch.float32
    return sums.to(out), counts.to(out)


def upsampled_size(height: int, width: int, grid_h: int, grid_w: int) -> tuple[int, int]:
    """RISE's upsampled mask size: one cell larger than the image in each direction."""
    return (grid_h + 1) * -(-height // grid_h), (grid_w + 1) * -(-width // grid_w)


def rise_masks(grid: torch.Tensor, shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    wide = torch.float64 if grid.dtype == torch.float64 else torch.float32
    up = F.interpolate(grid.to(wide)[:, None], size=upsampled_size(height, width, *grid.shape[1:]),
                       mode="bilinear", align_corners=False)[:, 0]
    return torch.stack([up[n, dy:dy + height, dx:dx + width] for n, (dy, dx) in enumerate(shifts.tolist())])


def apply_masks(x: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    idx = src.long()
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # the kernels' arithmetic
    m = masks[:, None].to(wide)
    return (x.index_select(0, idx).to(wide) * m + fill.index_select(0, idx).to(wide) * (1 - m)).to(x.dtype)
