/* featvis-fast CUDA backend: extremal-perturbation kernels (smooth masks, blended pyramid levels,
 * forward and backward), torch-free C ABI (implemented in extremal_cuda.cu). Semantics:
 * featvis_fast/_extremal_reference.py; see extremal_cpu.h for the formulas. float32, contiguous.
 *
 * params (K, h, w); weights (step, step, side*side); masks_out / grad (K, Ho, Wo); stats: a
 * (K, 3, Ho, Wo) float32 workspace for the backward. pyramid (B, L, C, H, W); masks (N, H, W);
 * src (N,) int32 image indices, NOT range-checked here (the op layer validates them); blend
 * images (N, C, H, W) or (N, H, W, C) when nhwc != 0.
 */
#ifndef FEATVIS_EXTREMAL_CUDA_H_
#define FEATVIS_EXTREMAL_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

int featvis_smooth_masks_cuda(const float* params, const float* weights, int64_t K, int64_t h, int64_t w,
                              int64_t step, int64_t side, int64_t padding, float coldness, int64_t Ho, int64_t Wo,
                              float* out, void* stream);

int featvis_smooth_masks_backward_cuda(const float* grad, const float* params, const float* weights, int64_t K,
                                       int64_t h, int64_t w, int64_t step, int64_t side, int64_t padding,
                                       float coldness, int64_t Ho, int64_t Wo, float* stats, float* grad_params,
                                       void* stream);

int featvis_blend_levels_cuda(const float* pyramid, const float* masks, const int32_t* src, int64_t N, int64_t L,
                              int64_t C, int64_t H, int64_t W, int complement, int flip, int nhwc, float* out,
                              void* stream);

int featvis_blend_levels_backward_cuda(const float* grad, const float* pyramid, const float* masks,
                                       const int32_t* src, int64_t N, int64_t L, int64_t C, int64_t H, int64_t W,
                                       int complement, int flip, int nhwc, float* grad_masks, void* stream);

#ifdef __cplusplus
}
#endif

#endif  // FEATVIS_EXTREMAL_CUDA_H_
