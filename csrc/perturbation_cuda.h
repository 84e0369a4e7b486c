/* featvis-fast CUDA backend: perturbation kernels (occlusion, RISE), torch-free C ABI (implemented in
 * perturbation_cuda.cu). Semantics: featvis_fast/_perturbation_reference.py. Conventions and
 * dtype codes (FEATVIS_DTYPE_FLOAT32/16/BFLOAT16): featvis_abi.h.
 *
 * Image batches x, fill: (B, C, H, W) of `dtype`, or (B, H, W, C) when nhwc != 0; outputs of
 * occlude / apply_masks: (N, same trailing dims), every element written. src: (N,) int32 image
 * indices and boxes: (N, 6) int32 (y0, y1, x0, x1, c0, c1), half-open, are NOT range-checked
 * here (the op layer validates them): an index outside [0, B) or a box outside the image reads
 * out of bounds / covers nothing.
 */
#ifndef FEATVIS_PERTURBATION_CUDA_H_
#define FEATVIS_PERTURBATION_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[n] = x[src[n]], except out[n, c, y, x] = fill[src[n], c, y, x] for (c, y, x) inside boxes[n]
 * (an exact copy). */
int featvis_occlude_cuda(const void* x, const void* fill, const int32_t* src, const int32_t* boxes, int64_t N,
                         int64_t C, int64_t H, int64_t W, int nhwc, int dtype, void* out, void* stream);

/* sums, counts: (B, P, H, W) float32, fully written: zero, then for each n, values[n] added to sums
 * and 1 to counts over planes [c0, c1) x rows [y0, y1) x columns [x0, x1) of image src[n].
 * Gather (each output element walks the N boxes in index order, fp32 sums): deterministic. */
int featvis_box_accumulate_cuda(const float* values, const int32_t* src, const int32_t* boxes, int64_t N,
                                int64_t B, int64_t P, int64_t H, int64_t W, float* sums, float* counts,
                                void* stream);

/* grid: (N, grid_h, grid_w) float32; shifts: (N, 2) int32 (dy, dx); masks: (N, H, W) float32 =
 * the bilinear (align_corners=False, PyTorch's fp32 rule) upsampling of grid[n] to (up_h, up_w)
 * sampled at (i + dy, j + dx). Requires 0 <= dy <= up_h - H, 0 <= dx <= up_w - W (unchecked),
 * grid_h, grid_w >= 1 and up_h, up_w <= 2^24. */
int featvis_rise_masks_cuda(const float* grid, const int32_t* shifts, int64_t N, int64_t grid_h, int64_t grid_w,
                            int64_t up_h, int64_t up_w, int64_t H, int64_t W, float* masks, void* stream);

/* masks: (N, H, W) float32; out[n] = x[src[n]] * m + fill[src[n]] * (1 - m), m = masks[n, y, x],
 * fp32 arithmetic without FMA, rounded once to `dtype`. */
int featvis_apply_masks_cuda(const void* x, const void* fill, const float* masks, const int32_t* src, int64_t N,
                             int64_t C, int64_t H, int64_t W, int nhwc, int dtype, void* out, void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_PERTURBATION_CUDA_H_ */
