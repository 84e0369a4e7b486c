/* featvis-fast CUDA backend: rectifier rules, torch-free C ABI (implemented in rectifier_cuda.cu).
 * Semantics: featvis_fast/_rectifier_reference.py. Conventions as in similarity_cuda.h: device
 * pointers to C-contiguous buffers, `stream` a cudaStream_t as void*, return value a cudaError_t
 * as int (0 == cudaSuccess), work only enqueued. dtype codes: FEATVIS_DTYPE_FLOAT32/16/BFLOAT16.
 */
#ifndef FEATVIS_RECTIFIER_CUDA_H_
#define FEATVIS_RECTIFIER_CUDA_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FEATVIS_RULE_BACKPROP 0  /* dx = g * f(m)              f(m) = m ? 1 : slope */
#define FEATVIS_RULE_DECONVNET 1 /* dx = g * d(g)              d(g) = g > 0 ? 1 : slope */
#define FEATVIS_RULE_GUIDED 2    /* dx = g * (f(m) * d(g)) */

/* x, y: n elements of `dtype` (y may equal x: in place); packed: (n + 31) / 32 int32 words, bit
 * i % 32 of word i / 32 = (lo < x_i < hi), warp ballots; NULL saves no mask.
 * slope == 0: y = clamp(x, lo, hi) (NaN passes); slope != 0 (needs lo == 0, hi == inf):
 * y = x > 0 ? x : slope * x. */
int featvis_rectify_cuda(const void* x, void* y, int32_t* packed, int64_t n, int dtype, float lo, float hi,
                         float slope, void* stream);

/* grad, dx: n elements of `dtype`; packed as above (unused, may be NULL, for FEATVIS_RULE_DECONVNET). */
int featvis_rectify_backward_cuda(const void* grad, const int32_t* packed, void* dx, int64_t n, int dtype,
                                  int rule, float slope, void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_RECTIFIER_CUDA_H_ */
