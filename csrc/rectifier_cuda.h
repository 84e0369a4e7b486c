/* featvis-fast CUDA backend: rectifier rules, torch-free C ABI (implemented in rectifier_cuda.cu).
 * Semantics: featvis_fast/_rectifier_reference.py. Conventions, rule and dtype codes: featvis_abi.h.
 */
#ifndef FEATVIS_RECTIFIER_CUDA_H_
#define FEATVIS_RECTIFIER_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

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
