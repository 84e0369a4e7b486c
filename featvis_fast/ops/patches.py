"""`featvis::gather_patches` and `scatter_patches`: the patch hot path of exact incremental
occlusion (Krypton, Nakandala et al., SIGMOD 2019; semantics: featvis_fast._patches_reference).

An occluded window changes only a region of each layer's activation. Per layer the clean
activation `base` (B, C, H, W) of the unoccluded images is held once and, per window n, only the
changed patch (N, C, ph, pw) at (patch_y[n], patch_x[n]). To compute the next layer on the changed
region alone, `gather_patches` cuts per window a tile of the activation with the patch pasted in
(tiles may reach past the map's edge: `pad`); at the end of the incremental part
`scatter_patches` pastes the patches into full maps (the same kernel, with a tile that is the
whole map).

One pure copy in every backend, so each is bitwise equal to the reference in every dtype. The
output follows base's layout (channels-last in, channels-last out); base and patches may have
any strides (the kernels get memory-order copies). float64 runs the reference. Not differentiable.
"""
from __future__ import annotations

import torch

from .. import _patches_reference as ref
from . import _registry
from ._layout import channels_last
from ._layout import logical as _logical
from ._layout import memory_format as _layout
from ._layout import memory_order as _memory_order
from ._registry import Kernels

KERNELS = Kernels("patches", gather_patches="gather_patches_triton")

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_shapes(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, tile_h: int, tile_w: int,
                  patches: torch.Tensor) -> None:
    """The checks that need no data (the fake implementation runs them too)."""
    if base.dim() != 4:
        raise ValueError(f"base must be (B, C, H, W), got shape {tuple(base.shape)}")
    if base.dtype not in DTYPES:
        raise ValueError(f"base must be float32, float16, bfloat16 or float64, got {base.dtype}")
    if patches.dim() != 4:
        raise ValueError(f"patches must be (N, C, ph, pw), got shape {tuple(patches.shape)}")
    if patches.dtype != base.dtype or patches.device != base.device:
        raise ValueError(f"patches must match base's dtype and device ({base.dtype} on {base.device}), "
                         f"got {patches.dtype} on {patches.device}")
    if patches.shape[1] != base.shape[1]:
        raise ValueError(f"patches must have base's {base.shape[1]} channels, got shape {tuple(patches.shape)}")
    if src.dim() != 1 or src.dtype != torch.int32:
        raise ValueError(f"src must be a 1-D int32 tensor, got {src.dtype} {tuple(src.shape)}")
    n = src.shape[0]
    if patches.shape[0] != n:
        raise ValueError(f"patches holds {patches.shape[0]} windows for {n} src entries")
    if corners.shape != (n, ref.CORNER_FIELDS) or corners.dtype != torch.int32:
        raise ValueError(f"corners must be ({n}, {ref.CORNER_FIELDS}) int32 (tile_y, tile_x, patch_y, patch_x), "
                         f"got {corners.dtype} {tuple(corners.shape)}")
    if src.device != base.device or corners.device != base.device:
        raise ValueError(f"src and corners must be on base's device {base.device}, got {src.device} and "
                         f"{corners.device}")
    if tile_h < 0 or tile_w < 0:
        raise ValueError(f"tile_h and tile_w must be >= 0, got {tile_h} x {tile_w}")


def _check_values(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, patches: torch.Tensor) -> None:
    """The checks on src's and corners' values: image indices and patch boxes inside the map."""
    batch, _, height, width = base.shape
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= batch):
        raise ValueError(f"src holds image indices outside [0, {batch})")
    ph, pw = patches.shape[2:]
    if src.numel() and ph * pw > 0:
        py, px = corners[:, 2].long(), corners[:, 3].long()
        if not bool(((py >= 0) & (py + ph <= height) & (px >= 0) & (px + pw <= width)).all()):
            raise ValueError(f"patch boxes must lie inside the {height} x {width} map: 0 <= patch_y, "
                             f"patch_y + {ph} <= {height}, 0 <= patch_x, patch_x + {pw} <= {width}")


@torch.library.custom_op("featvis::gather_patches", mutates_args=())
def gather_patches(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, tile_h: int, tile_w: int,
                   patches: torch.Tensor, pad: float, backend: str) -> torch.Tensor:
    """base (B, C, H, W); src (N,) int32; corners (N, 4) int32 (tile_y, tile_x, patch_y, patch_x);
    patches (N, C, ph, pw) -> (N, C, tile_h, tile_w) tiles of base[src[n]] at (tile_y, tile_x) with
    patches[n] pasted in at (patch_y, patch_x) and pad outside the map."""
    _check_shapes(base, src, corners, tile_h, tile_w, patches)
    _check_values(base, src, corners, patches)
    cl = channels_last(base)
    module = KERNELS.for_call(backend, base.dtype)
    if module is None:
        return ref.gather_patches(base, src, corners, tile_h, tile_w, patches, pad).contiguous(
            memory_format=_layout(cl))
    n, c = src.numel(), base.shape[1]
    if n * c * tile_h * tile_w == 0:  # nothing to copy; the strides torch (and the fake) give an empty tensor
        return torch.empty((n, c, tile_h, tile_w), dtype=base.dtype, device=base.device, memory_format=_layout(cl))
    shape = (n, tile_h, tile_w, c) if cl else (n, c, tile_h, tile_w)
    out = _registry.empty(shape, base.dtype, base.device)
    module.gather_patches(_memory_order(base, cl), src.contiguous(), corners.contiguous(),
                          _memory_order(patches, cl), ref.pad_value(pad, base.dtype), cl, out)
    return _logical(out, cl)


@gather_patches.register_fake
def _(base, src, corners, tile_h, tile_w, patches, pad, backend):
    _check_shapes(base, src, corners, tile_h, tile_w, patches)
    shape = (src.shape[0], base.shape[1], tile_h, tile_w)
    return base.new_empty(shape).contiguous(memory_format=_layout(channels_last(base)))


def scatter_patches(base: torch.Tensor, src: torch.Tensor, corners: torch.Tensor, patches: torch.Tensor,
                    backend: str) -> torch.Tensor:
    """Full maps of the windows: base[src[n]] with patches[n] pasted in at corners[n].

    The end of an incremental occlusion pass; one `gather_patches` call whose tile is the whole map.

    Args:
        base: (B, C, H, W) clean activations, float32/float16/bfloat16/float64, any strides.
        src: (N,) int32, the image of each window.
        corners: (N, 2) int32 rows (patch_y, patch_x); each patch box lies inside the map.
        patches: (N, C, ph, pw) in base's dtype and device (ph or pw may be 0).
        backend: "torch", "cpp", "cuda" or "triton".

    Returns:
        (N, C, H, W) in base's layout (channels-last in, channels-last out).

    Raises:
        ValueError: a shape, dtype, index or patch box is wrong (the message names it).
    """
    if src.dim() != 1 or src.dtype != torch.int32:
        raise ValueError(f"src must be a 1-D int32 tensor, got {src.dtype} {tuple(src.shape)}")
    n = src.shape[0]
    if corners.shape != (n, 2) or corners.dtype != torch.int32:
        raise ValueError(f"corners must be ({n}, 2) int32 (patch_y, patch_x), got {corners.dtype} "
                         f"{tuple(corners.shape)}")
    if base.dim() != 4:
        raise ValueError(f"base must be (B, C, H, W), got shape {tuple(base.shape)}")
    tiles = torch.cat([torch.zeros_like(corners), corners], dim=1)  # every tile starts at (0, 0)
    return gather_patches(base, src, tiles, base.shape[2], base.shape[3], patches, 0.0, backend)
