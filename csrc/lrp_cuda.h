/* featvis-fast CUDA backend: the LRP rules' elementwise step, torch-free C ABI (implemented in
 * lrp_cuda.cu). Semantics: featvis_fast/_lrp_reference.py.
 *
 * out[i] = r[i] / (z + eps * sign(z)), z = z1[i] + z2[i] (z2 may be NULL), sign(0) = +1;
 * float32 arrays of n elements; rounded after each operation (_rn intrinsics, no FMA).
 */
#ifndef FEATVIS_LRP_CUDA_H_
#define FEATVIS_LRP_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

int featvis_lrp_ratio_cuda(const float* r, const float* z1, const float* z2, int64_t n, float eps, float* out,
                           void* stream);

#ifdef __cplusplus
}
#endif

#endif  // FEATVIS_LRP_CUDA_H_
