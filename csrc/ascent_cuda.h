/* featvis-fast CUDA backend: the fused gradient-ascent step `featvis::ascent_step`, torch-free C ABI
 * (implemented in ascent_cuda.cu). Semantics: featvis_fast/_ascent_reference.py; calling convention of
 * the op layer: featvis_fast/ops/ascent.py. Conventions, optimizer and dtype codes: featvis_abi.h.
 */
#ifndef FEATVIS_ASCENT_CUDA_H_
#define FEATVIS_ASCENT_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scalar settings of one step (host memory). Regularizer weights 0 switch their terms off;
 * clipping to [clip_lo, clip_hi] happens only when clip_lo <= clip_hi. */
typedef struct featvis_ascent_params {
  int optimizer;  /* FEATVIS_OPTIMIZER_SGD, FEATVIS_OPTIMIZER_ADAM or FEATVIS_OPTIMIZER_NESTEROV */
  int64_t step;   /* from 1 (Adam's bias correction) */
  float lr, momentum, beta1, beta2, eps;
  float l1, l2, lp, p, tv, beta, tv_eps;
  float clip_lo, clip_hi;
} featvis_ascent_params;

/* x: (N, C, H, W) of `dtype`; g: (N, C, h, w) float32, the objective gradient of the crop at
 * offsets (N, 2) int32 (dy, dx), 0 outside it, times scale[n] ((N,) float32); m: float32 like x;
 * v: float32 like x (Adam; unused, may be NULL, for SGD and Nesterov). d = g * scale - grad R(x)
 * with R = l1 |x| + l2 x^2 + lp |x|^p + tv (a^2 + b^2 + tv_eps)^(beta / 2) per pixel (a, b: the forward
 * differences down and right, 0 on the last row / column), fp32 arithmetic without FMA
 * contraction in the update. Writes out (N, C, H, W) of `dtype` (rounded once), m_out float32,
 * v_out float32 (Adam; unused, may be NULL, for SGD and Nesterov) and nxt (N, C, crop_h, crop_w) of
 * `dtype` = out cropped at next_offsets (N, 2) int32; every element written. Offsets are NOT range-checked
 * here (the op layer validates them): a crop outside the image reads / writes out of bounds.
 * Inputs and outputs must not overlap. */
int featvis_ascent_step_cuda(const void* x, const float* g, const int32_t* offsets, const float* scale,
                             const float* m, const float* v, const int32_t* next_offsets, int64_t N, int64_t C,
                             int64_t H, int64_t W, int64_t h, int64_t w, int64_t crop_h, int64_t crop_w, int dtype,
                             const featvis_ascent_params* params, void* out, float* m_out, float* v_out, void* nxt,
                             void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_ASCENT_CUDA_H_ */
