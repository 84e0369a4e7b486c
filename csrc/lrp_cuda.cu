// featvis-fast CUDA kernel of featvis::lrp_ratio (see lrp_cuda.h): a grid-stride loop, one
// element per thread and step, rounded like the reference (_rn intrinsics, no FMA contraction).
#include "lrp_cuda.h"

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;

__global__ void lrp_ratio_kernel(const float* __restrict__ r, const float* __restrict__ z1,
                                 const float* __restrict__ z2, int64_t n, float eps, float* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    float z = __ldg(z1 + i);
    if (z2 != nullptr) z = __fadd_rn(z, __ldg(z2 + i));
    z = __fadd_rn(z, z < 0.0f ? -eps : eps);
    out[i] = __fdiv_rn(__ldg(r + i), z);
  }
}

}  // namespace

extern "C" int featvis_lrp_ratio_cuda(const float* r, const float* z1, const float* z2, int64_t n, float eps,
                                      float* out, void* stream) {
  if (n == 0) return 0;
  int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  lrp_ratio_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(r, z1, z2, n, eps,
                                                                                                    out);
  return static_cast<int>(cudaGetLastError());
}
