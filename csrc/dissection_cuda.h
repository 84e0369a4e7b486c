/* featvis-fast CUDA backend: the Network Dissection tally `featvis::dissect_tally`, torch-free C ABI
 * (implemented in dissection_cuda.cu). Semantics: featvis_fast/_dissection_reference.py; calling convention
 * of the op layer: featvis_fast/ops/dissection.py. Conventions: featvis_abi.h.
 */
#ifndef FEATVIS_DISSECTION_CUDA_H_
#define FEATVIS_DISSECTION_CUDA_H_

#include <stdint.h>

#include "featvis_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of device scratch featvis_dissect_tally_cuda needs: the source taps of the H rows and W columns
 * and the labels of every (image, concept) plane packed 32 pixels per word. */
int64_t featvis_dissect_tally_workspace_bytes(int64_t B, int64_t K, int64_t H, int64_t W);

/* acts (B, U, h, w) float32, thresholds (U,) float64, labels (B, K, H, W) uint8 (nonzero = in the concept),
 * annotated (B, K) uint8 (nonzero = annotated); h, w, H, W >= 1 and H * W < 2^31. workspace: at least
 * featvis_dissect_tally_workspace_bytes(B, K, H, W) bytes, 8-byte aligned. For every image b and unit u the
 * mask m = bilinear_upsample(acts[b, u], H, W) > thresholds[u] is formed in float64 exactly as the reference
 * (PyTorch's align_corners=False rule, rows first, every operation rounded on its own: no FMA), one warp
 * ballot per 32 pixels, and intersected with the packed labels with popcounts. Writes (zeroed first, exact
 * int64 counts; int64 atomics, so any order gives the same result):
 *   intersection[u, k] = sum over b with annotated[b, k] of |m[b, u] & labels[b, k]|   (U, K)
 *   unit_area[u, k]    = sum over b with annotated[b, k] of |m[b, u]|                   (U, K)
 *   label_area[k]      = sum over b with annotated[b, k] of |labels[b, k]|              (K,) */
int featvis_dissect_tally_cuda(const float* acts, const double* thresholds, const uint8_t* labels,
                               const uint8_t* annotated, int64_t B, int64_t U, int64_t h, int64_t w, int64_t K,
                               int64_t H, int64_t W, void* workspace, int64_t* intersection, int64_t* unit_area,
                               int64_t* label_area, void* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_DISSECTION_CUDA_H_ */
