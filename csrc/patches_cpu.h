// featvis-fast: CPU kernel for the patch op of exact incremental occlusion (Krypton, Nakandala et
// al., SIGMOD 2019); semantics: featvis_fast/_patches_reference.py.
//
//   gather_patches(base, src, corners, patches, pad, nhwc, out)
//     out[n, c, i, j] with y = tile_y[n] + i, x = tile_x[n] + j:
//       patches[n, c, y - patch_y[n], x - patch_x[n]] inside the patch box, else
//       base[src[n], c, y, x] inside the map, else pad.
//
// base (B, C, H, W), patches (N, C, ph, pw) and out (N, C, tile_h, tile_w) are contiguous in memory
// order: (B, H, W, C), (N, ph, pw, C) and (N, tile_h, tile_w, C) when nhwc; one dtype of f32, f16,
// bf16 or f64 (a pure copy of raw words: exact). src (N,) int32 picks the image of each window;
// corners (N, 4) int32 rows (tile_y, tile_x, patch_y, patch_x); tiles may reach past the map (pad),
// patch boxes must lie inside it (checked, as src's range). pad is converted to the dtype (exact
// when the op layer has rounded it to the dtype already). Every output element is written once.
// Each output row (n, c, i) (NCHW) or (n, i) (NHWC: a row of tile_w pixels x C channels, one
// contiguous run per segment) is up to five copies: pad | base | patch | base | pad. Rows are
// split with at::parallel_for.
#pragma once

#include <ATen/ATen.h>

namespace featvis::cpu {

void gather_patches(const at::Tensor& base, const at::Tensor& src, const at::Tensor& corners,
                    const at::Tensor& patches, double pad, bool nhwc, at::Tensor& out);

}  // namespace featvis::cpu
