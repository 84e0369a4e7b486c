/* featvis-fast CUDA backend: pixel similarity and colorize, torch-free C ABI (implemented in
 * similarity_cuda.cu, similarity_int8_cuda.cu and colorize_cuda.cu). Conventions, metric and dtype
 * codes, featvis_cuda_error_string: featvis_abi.h.
 */
#ifndef FEATVIS_SIMILARITY_CUDA_H_
#define FEATVIS_SIMILARITY_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* int8: largest C for which the exact int32 channel sum cannot overflow (128 * 128 * C < 2^31). */
#define FEATVIS_INT8_MAX_C 131071

/* features: (C, N) of `dtype`; queries: (Q, C) of `dtype`;
 * sim_out: (Q, N) float32, fully written; minmax_out: (Q, 2) float32 = [min_n, max_n] of sim_out[q].
 * Requires 0 <= N <= INT32_MAX, 0 <= C <= INT32_MAX, 0 <= Q <= 524280.
 *
 * scales, query_scales: NULL for the float dtypes (non-NULL -> cudaErrorInvalidValue).
 * dtype FEATVIS_DTYPE_INT8 (metrics INNER and ANGULAR only, C <= FEATVIS_INT8_MAX_C): scales (N,)
 * and query_scales (Q,) float32, required non-NULL whenever N > 0 and Q > 0 (the only case in which
 * they are read); the inner product is
 *   acc = sum_c (int32)features[c, n] * (int32)queries[q, c]        (exact, int32)
 *   x   = ((float)acc * scales[n]) * query_scales[q]                 (two fp32 roundings, no FMA)
 * and sim_out[q, n] = x (INNER) or the ANGULAR transform of x. */
int featvis_pixel_similarity_cuda(const void* features, const void* queries, const float* scales,
                                  const float* query_scales, int64_t C, int64_t N, int64_t Q, int dtype,
                                  int metric, float* sim_out, float* minmax_out, void* stream);

/* sim: (Q, N) float32; lo, hi: (Q,) float32; lut: (256, 4) uint8; rgba_out: (Q, N, 4) uint8.
 * scale = hi > lo ? 255/(hi-lo) : 0; idx = (int)clamp((s-lo)*scale + 0.5, 0, 255) (NaN -> 0);
 * rgba_out[q, n, :] = lut[idx, :]. Requires 0 <= N <= INT32_MAX. */
int featvis_colorize_cuda(const float* sim, const float* lo, const float* hi, const uint8_t* lut,
                          uint8_t* rgba_out, int64_t Q, int64_t N, void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_SIMILARITY_CUDA_H_ */
