// featvis-fast CUDA kernels for the rectifier rules (C ABI: rectifier_cuda.h). One thread per
// element in a grid-stride loop over warp-aligned chunks: a warp covers one 32-element mask word,
// so the forward packs its mask with one __ballot_sync per word, and the backward reads each word
// once per warp (all lanes load the same address: one transaction) and picks its own bit.
#include "rectifier_cuda.h"
#include "featvis_abi.h"
#include "cuda_convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535 * 4;

using featvis::cuda::from_float;
using featvis::cuda::to_float;

// The grid-stride loop runs over whole warps so every lane of a warp takes part in each ballot.
template <typename T, bool kLeaky>
__global__ void __launch_bounds__(kThreads)
rectify_kernel(const T* x, T* y,  // y may be x (in place): no __restrict__
               int32_t* __restrict__ packed, int64_t n, float lo, float hi,
               float slope) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int lane = threadIdx.x & 31;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i - lane < n; i += stride) {
    const bool in_range = i < n;
    const float v = in_range ? to_float<T>(x[i]) : 0.0f;
    const bool pass = in_range && v > lo && v < hi;
    if (in_range) {
      float out;
      if constexpr (kLeaky) out = v > lo ? v : __fmul_rn(v, slope);
      else out = v <= lo ? lo : (v >= hi ? hi : v);
      y[i] = from_float<T>(out);
    }
    const unsigned bits = __ballot_sync(0xffffffffu, pass);
    if (packed != nullptr && lane == 0) packed[i >> 5] = static_cast<int32_t>(bits);
  }
}

template <typename T, int kRule>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const T* __restrict__ grad, const int32_t* __restrict__ packed, T* __restrict__ dx, int64_t n,
                float slope) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const float g = to_float<T>(grad[i]);
    float factor = 1.0f;
    if (kRule != FEATVIS_RULE_DECONVNET) {
      const uint32_t word = static_cast<uint32_t>(__ldg(packed + (i >> 5)));
      factor = ((word >> (i & 31)) & 1u) ? 1.0f : slope;
    }
    if (kRule != FEATVIS_RULE_BACKPROP) factor = __fmul_rn(factor, g > 0.0f ? 1.0f : slope);
    dx[i] = from_float<T>(__fmul_rn(g, factor));
  }
}

int blocks_for(int64_t n) {
  const int64_t warps = (n + 31) / 32;
  const int64_t blocks = (warps * 32 + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <typename T>
int launch_rectify(const void* x, void* y, int32_t* packed, int64_t n, float lo, float hi, float slope,
                   cudaStream_t stream) {
  if (slope != 0.0f)
    rectify_kernel<T, true><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                     packed, n, lo, hi, slope);
  else
    rectify_kernel<T, false><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                      packed, n, lo, hi, slope);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_backward(const void* grad, const int32_t* packed, void* dx, int64_t n, int rule, float slope,
                    cudaStream_t stream) {
  const T* g = static_cast<const T*>(grad);
  T* d = static_cast<T*>(dx);
  if (rule == FEATVIS_RULE_BACKPROP)
    backward_kernel<T, FEATVIS_RULE_BACKPROP><<<blocks_for(n), kThreads, 0, stream>>>(g, packed, d, n, slope);
  else if (rule == FEATVIS_RULE_DECONVNET)
    backward_kernel<T, FEATVIS_RULE_DECONVNET><<<blocks_for(n), kThreads, 0, stream>>>(g, packed, d, n, slope);
  else
    backward_kernel<T, FEATVIS_RULE_GUIDED><<<blocks_for(n), kThreads, 0, stream>>>(g, packed, d, n, slope);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int featvis_rectify_cuda(const void* x, void* y, int32_t* packed, int64_t n, int dtype, float lo,
                                    float hi, float slope, void* stream) {
  if (n < 0 || (slope != 0.0f && lo != 0.0f)) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32: return launch_rectify<float>(x, y, packed, n, lo, hi, slope, s);
    case FEATVIS_DTYPE_FLOAT16: return launch_rectify<__half>(x, y, packed, n, lo, hi, slope, s);
    case FEATVIS_DTYPE_BFLOAT16: return launch_rectify<__nv_bfloat16>(x, y, packed, n, lo, hi, slope, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

extern "C" int featvis_rectify_backward_cuda(const void* grad, const int32_t* packed, void* dx, int64_t n,
                                             int dtype, int rule, float slope, void* stream) {
  if (n < 0 || rule < FEATVIS_RULE_BACKPROP || rule > FEATVIS_RULE_GUIDED) return static_cast<int>(cudaErrorInvalidValue);
  if (rule != FEATVIS_RULE_DECONVNET && packed == nullptr && n > 0) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32: return launch_backward<float>(grad, packed, dx, n, rule, slope, s);
    case FEATVIS_DTYPE_FLOAT16: return launch_backward<__half>(grad, packed, dx, n, rule, slope, s);
    case FEATVIS_DTYPE_BFLOAT16: return launch_backward<__nv_bfloat16>(grad, packed, dx, n, rule, slope, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
