/* featvis-fast: the numeric codes and error convention every C++ and CUDA source shares.
 *
 * The Python and Triton side defines the same codes in featvis_fast/_abi.py; tests/test_abi.py
 * checks that both agree and that no other source defines them again.
 *
 * CUDA C ABI convention: every featvis_*_cuda function takes device pointers to C-contiguous
 * buffers and a cudaStream_t passed as void*, only enqueues work on that stream, and returns a
 * cudaError_t value as int (0 == cudaSuccess; argument errors: cudaErrorInvalidValue, 1).
 */
#ifndef FEATVIS_ABI_H_
#define FEATVIS_ABI_H_

/* rectifier rules (featvis::rectify_backward) */
#define FEATVIS_RULE_BACKPROP 0  /* dx = g * f(m)              f(m) = m ? 1 : slope */
#define FEATVIS_RULE_DECONVNET 1 /* dx = g * d(g)              d(g) = g > 0 ? 1 : slope */
#define FEATVIS_RULE_GUIDED 2    /* dx = g * (f(m) * d(g)) */

/* pixel-similarity metrics (featvis::pixel_similarity) */
#define FEATVIS_METRIC_INNER 0     /* s = sum_c f[c,n] * q[c]                     (fp32 accumulate) */
#define FEATVIS_METRIC_ANGULAR 1   /* s = 1 - acosf(clamp(inner, 0, 1)) * (2/pi)                   */
#define FEATVIS_METRIC_EUCLIDEAN 2 /* s = sqrtf(sum_c (f[c,n] - q[c])^2)         (fp32 accumulate) */

/* gradient-ascent optimizers (featvis::ascent_step) */
#define FEATVIS_OPTIMIZER_SGD 0  /* m' = momentum m + d;  x' = x + lr m' */
#define FEATVIS_OPTIMIZER_ADAM 1 /* m' = b1 m + (1 - b1) d;  v' = b2 v + (1 - b2) d^2;
                                    x' = x + lr (m' / (1 - b1^step)) / (sqrt(v' / (1 - b2^step)) + eps) */
#define FEATVIS_OPTIMIZER_NESTEROV 2 /* m' = momentum m + d;  x' = x + lr (d + momentum m') */

/* storage dtypes crossing the CUDA C ABI */
#define FEATVIS_DTYPE_FLOAT32 0
#define FEATVIS_DTYPE_FLOAT16 1
#define FEATVIS_DTYPE_BFLOAT16 2
#define FEATVIS_DTYPE_INT8 3 /* int8 storage with per-pixel scales and per-query scales */

#ifdef __cplusplus
extern "C" {
#endif

/* Human-readable message for a code a featvis_*_cuda function returned (cudaGetErrorString). */
const char* featvis_cuda_error_string(int err);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FEATVIS_ABI_H_ */
