// featvis-fast CUDA kernel: LUT colorize of similarity maps (featvis_colorize_cuda, see
// similarity_cuda.h). Torch-free, like the similarity kernels; the torch glue is bindings_cuda.cpp.

#include "similarity_cuda.h"
#include "similarity_cuda_common.h"

#include <cuda_runtime.h>
#include <stdint.h>

using namespace featvis_cuda;

namespace {

// t = (s - lo) * scale + 0.5 without FMA contraction (matches the CPU backends), clamp to
// [0, 255] with NaN -> 0, truncate, look up.
__device__ __forceinline__ uint32_t color_of(float s, float lo, float scale, const uint32_t* lut_s) {
  float t = __fadd_rn(__fmul_rn(__fsub_rn(s, lo), scale), 0.5f);
  t = (t >= 0.0f) ? fminf(t, 255.0f) : 0.0f;
  return lut_s[static_cast<int>(t)];
}

// grid: (ceil(N / (4 * kThreads)), min(Q, 65535)); block: kThreads; 4 pixels per thread.
// kVec: N % 4 == 0 and sim / rgba 16-byte aligned -> one float4 load + one 16-byte store.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
colorize_kernel(const float* __restrict__ sim, const float* __restrict__ lo, const float* __restrict__ hi,
                const uint8_t* __restrict__ lut, uint8_t* __restrict__ rgba, int Q, int N, int out_aligned4) {
  __shared__ uint32_t lut_s[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    const uint8_t* e = lut + 4 * i;
    lut_s[i] = static_cast<uint32_t>(__ldg(e)) | (static_cast<uint32_t>(__ldg(e + 1)) << 8) |
               (static_cast<uint32_t>(__ldg(e + 2)) << 16) | (static_cast<uint32_t>(__ldg(e + 3)) << 24);
  }
  __syncthreads();

  for (int q = blockIdx.y; q < Q; q += gridDim.y) {
    const float l = __ldg(lo + q), h = __ldg(hi + q);
    const float scale = (h > l) ? __fdiv_rn(255.0f, __fsub_rn(h, l)) : 0.0f;
    const float* const srow = sim + static_cast<size_t>(q) * static_cast<size_t>(N);
    uint8_t* const orow = rgba + static_cast<size_t>(q) * static_cast<size_t>(N) * 4;
    if constexpr (kVec) {
      const long long n = (static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x) * 4;
      if (n < N) {
        const uint4 r = ld_stream_v4(srow + n);
        uint4 o;
        o.x = color_of(__uint_as_float(r.x), l, scale, lut_s);
        o.y = color_of(__uint_as_float(r.y), l, scale, lut_s);
        o.z = color_of(__uint_as_float(r.z), l, scale, lut_s);
        o.w = color_of(__uint_as_float(r.w), l, scale, lut_s);
        *reinterpret_cast<uint4*>(orow + 4 * n) = o;
      }
    } else {
      const long long base = static_cast<long long>(blockIdx.x) * (4 * kThreads) + threadIdx.x;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const long long n = base + static_cast<long long>(k) * kThreads;
        if (n < N) {
          const uint32_t c = color_of(__ldg(srow + n), l, scale, lut_s);
          uint8_t* const o = orow + 4 * n;
          if (out_aligned4) {
            *reinterpret_cast<uint32_t*>(o) = c;
          } else {
            o[0] = static_cast<uint8_t>(c); o[1] = static_cast<uint8_t>(c >> 8);
            o[2] = static_cast<uint8_t>(c >> 16); o[3] = static_cast<uint8_t>(c >> 24);
          }
        }
      }
    }
  }
}

}  // namespace

extern "C" int featvis_colorize_cuda(const float* sim, const float* lo, const float* hi, const uint8_t* lut,
                                     uint8_t* rgba_out, int64_t Q, int64_t N, void* stream) {
  if (Q < 0 || N < 0 || N > INT32_MAX || Q > INT32_MAX) return cudaErrorInvalidValue;
  if (Q == 0 || N == 0) return cudaSuccess;
  if (!sim || !lo || !hi || !lut || !rgba_out) return cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((N + 4 * kThreads - 1) / (4 * kThreads)),
                  static_cast<unsigned>(Q < kMaxGridY ? Q : kMaxGridY));
  const int q = static_cast<int>(Q), n = static_cast<int>(N);
  if (N % 4 == 0 && aligned(sim, 16) && aligned(rgba_out, 16)) {
    colorize_kernel<true><<<grid, kThreads, 0, st>>>(sim, lo, hi, lut, rgba_out, q, n, 1);
  } else {
    colorize_kernel<false><<<grid, kThreads, 0, st>>>(sim, lo, hi, lut, rgba_out, q, n, aligned(rgba_out, 4) ? 1 : 0);
  }
  return cudaGetLastError();
}
