/* featvis-fast CUDA backend: the patch kernel of exact incremental occlusion (Krypton, Nakandala et
 * al., SIGMOD 2019), torch-free C ABI (implemented in patches_cuda.cu). Semantics:
 * featvis_fast/_patches_reference.py. Conventions and dtype codes (FEATVIS_DTYPE_FLOAT32/16/BFLOAT16):
 * featvis_abi.h.
 *
 * base: (B, C, H, W) of `dtype`, or (B, H, W, C) when nhwc != 0; patches: (N, C, ph, pw), or
 * (N, ph, pw, C); out: (N, C, tile_h, tile_w), or (N, tile_h, tile_w, C), every element written.
 * src: (N,) int32 image indices; corners: (N, 4) int32 rows (tile_y, tile_x, patch_y, patch_x).
 * Tiles may reach past the map (pad); src and the patch boxes are NOT range-checked here (the op
 * layer validates them): an index outside [0, B) or a patch box outside the map reads out of bounds.
 */
#ifndef FEATVIS_PATCHES_CUDA_H_
#define FEATVIS_PATCHES_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[n, c, i, j] with y = tile_y[n] + i, x = tile_x[n] + j: patches[n, c, y - patch_y[n], x - patch_x[n]]
 * inside the patch box, else base[src[n], c, y, x] inside the map, else pad converted to `dtype` (rounded
 * to nearest even; exact for a pad the dtype represents). An exact copy of raw words. */
int featvis_gather_patches_cuda(const void* base, const int32_t* src, const int32_t* corners, const void* patches,
                                int64_t N, int64_t B, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw,
                                int64_t tile_h, int64_t tile_w, double pad, int nhwc, int dtype, void* out,
                                void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_PATCHES_CUDA_H_ */
