// featvis-fast CUDA kernels: per-pixel query similarity (+ per-query min/max) for float storage
// (fp32/fp16/bf16), and the C ABI's entry point featvis_pixel_similarity_cuda (all dtypes).
//
// Torch-free on purpose: plain CUDA behind the small C ABI of similarity_cuda.h; the torch glue
// (checks, streams) lives in bindings_cuda.cpp.
//
// pixel_similarity is a memory-bound GEMV: sim[q, n] = reduce_c f(features[c, n], queries[q, c]).
// Layout of one 256-thread block:
//   * it owns a tile of P "pixel vectors" (one vector = 16 bytes of a feature row = kVec pixels);
//   * its threads are split into S = 256 / P channel slices; thread (s, p) accumulates channels
//     c = s, s+S, s+2S, ... for pixel vector p (S > 1 only for small-N/large-C shapes, so that
//     the grid still covers the SMs), then the slices are summed in shared memory;
//   * it handles a chunk of QC <= 8 queries (staged as fp32 in shared memory, broadcast reads);
//     all QC x kVec accumulators live in registers, so each feature byte is read once per chunk.
// int8 storage uses the same layout (similarity_int8_cuda.cu); LUT colorize is in colorize_cuda.cu;
// the helpers they share are in similarity_cuda_common.h.

#include "similarity_cuda.h"
#include "similarity_cuda_common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

using namespace featvis_cuda;

namespace {

// ---------------------------------------------------------------------------------------------
// loads / conversions

__device__ __forceinline__ float h16_to_f(unsigned int bits16) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
}

template <typename T> struct Elem;

template <> struct Elem<float> {
  static constexpr int kVec = 4;
  static __device__ __forceinline__ float load1(const float* p) { return __ldg(p); }
  static __device__ __forceinline__ void cvt(const uint4& r, float (&f)[4]) {
    f[0] = __uint_as_float(r.x); f[1] = __uint_as_float(r.y);
    f[2] = __uint_as_float(r.z); f[3] = __uint_as_float(r.w);
  }
};

template <> struct Elem<__half> {
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float load1(const __half* p) {
    return h16_to_f(__ldg(reinterpret_cast<const unsigned short*>(p)));
  }
  static __device__ __forceinline__ void cvt(const uint4& r, float (&f)[8]) {
    const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = h16_to_f(w[i] & 0xffffu);
      f[2 * i + 1] = h16_to_f(w[i] >> 16);
    }
  }
};

template <> struct Elem<__nv_bfloat16> {
  static constexpr int kVec = 8;
  static __device__ __forceinline__ float load1(const __nv_bfloat16* p) {
    return __uint_as_float(static_cast<unsigned int>(__ldg(reinterpret_cast<const unsigned short*>(p)))
                           << 16);
  }
  static __device__ __forceinline__ void cvt(const uint4& r, float (&f)[8]) {
    const unsigned int w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

// One channel row's worth of this thread's kVec pixels, as raw registers.
//  kVecLoad: one 16-byte load of kVec contiguous pixels (row base must be 16-byte aligned).
//  otherwise: kVec scalar loads of pixels p, p+P, p+2P, ... (coalesced across the warp).
template <typename T, bool kVecLoad> struct RowLoad;

template <typename T> struct RowLoad<T, true> {
  static constexpr int kVec = Elem<T>::kVec;
  uint4 raw;
  __device__ __forceinline__ void load(const T* row, const int (&)[kVec]) { raw = ld_stream_v4(row); }
  __device__ __forceinline__ void get(float (&f)[kVec]) const { Elem<T>::cvt(raw, f); }
};

template <typename T> struct RowLoad<T, false> {
  static constexpr int kVec = Elem<T>::kVec;
  float v[kVec];
  __device__ __forceinline__ void load(const T* row, const int (&off)[kVec]) {
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = Elem<T>::load1(row + off[k]);
  }
  __device__ __forceinline__ void get(float (&f)[kVec]) const {
#pragma unroll
    for (int k = 0; k < kVec; ++k) f[k] = v[k];
  }
};

template <int QC, int VEC, bool kEucl>
__device__ __forceinline__ void accumulate(float (&acc)[QC][VEC], const float (&f)[VEC],
                                           const float* __restrict__ qs) {
  float qv[QC];
  if constexpr (QC % 4 == 0) {
#pragma unroll
    for (int j = 0; j < QC; j += 4) {
      const float4 t = *reinterpret_cast<const float4*>(qs + j);
      qv[j] = t.x; qv[j + 1] = t.y; qv[j + 2] = t.z; qv[j + 3] = t.w;
    }
  } else if constexpr (QC == 2) {
    const float2 t = *reinterpret_cast<const float2*>(qs);
    qv[0] = t.x; qv[1] = t.y;
  } else {
#pragma unroll
    for (int j = 0; j < QC; ++j) qv[j] = qs[j];
  }
#pragma unroll
  for (int j = 0; j < QC; ++j) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      if constexpr (kEucl) {
        const float d = f[k] - qv[j];
        acc[j][k] = fmaf(d, d, acc[j][k]);
      } else {
        acc[j][k] = fmaf(f[k], qv[j], acc[j][k]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kernels

__global__ void init_minmax_kernel(float* __restrict__ minmax, int Q) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < Q) {
    minmax[2 * i] = pos_inf();
    minmax[2 * i + 1] = neg_inf();
  }
}

// Min resident blocks per SM (register cap 65536 / (256 * k)): 2 for 8 queries (64 fp32 accumulators),
// more for fewer; the scalar fallback path keeps VEC x U loads in registers, so it gets 2.
template <int QC, bool kVecLoad> struct SimBounds {
  static constexpr int kMinBlocks = (!kVecLoad || QC >= 8) ? 2 : (QC >= 4 ? 3 : 4);
};

// grid: (ceil(ceil(N / kVec) / P), ceil(Q / QC)); block: kThreads; dynamic shared memory:
// max(tileC * QC, S > 1 ? (S / 2) * P * QC * kVec : 0) floats.
// qry / sim / minmax point at this launch's first query; Q is this launch's query count.
template <typename T, int QC, bool kEucl, bool kVecLoad>
__global__ void __launch_bounds__(kThreads, SimBounds<QC, kVecLoad>::kMinBlocks)
similarity_kernel(const T* __restrict__ feat, const T* __restrict__ qry, int C, int N, int Q,
                  int angular, float* __restrict__ sim, float* __restrict__ minmax, int logP,
                  int tileC) {
  constexpr int VEC = Elem<T>::kVec;
  // loads kept in flight per thread: kVecLoad -> U x 16 B; scalar path -> U x VEC elements.
  constexpr int U = kVecLoad ? (QC <= 2 ? 8 : 4) : (QC <= 2 ? 4 : 2);

  extern __shared__ float4 smem_v4[];
  float* const smem = reinterpret_cast<float*>(smem_v4);

  const int tid = threadIdx.x;
  const int P = 1 << logP;              // pixel vectors per block
  const int S = kThreads >> logP;       // channel slices per block
  const int p = tid & (P - 1);
  const int s = tid >> logP;
  const int q0 = blockIdx.y * QC;
  const long long tile = static_cast<long long>(blockIdx.x) * P * VEC;  // first pixel of tile

  // Pixels owned by this thread. Out-of-range ones are clamped to a valid pixel (loads stay in
  // bounds, no branches in the C loop) and simply not stored.
  int off[VEC];
  long long n0 = 0;  // kVecLoad: first of VEC contiguous pixels (N % VEC == 0 there)
  if constexpr (kVecLoad) {
    n0 = tile + static_cast<long long>(p) * VEC;
    const int nc = n0 < N ? static_cast<int>(n0) : N - VEC;
#pragma unroll
    for (int k = 0; k < VEC; ++k) off[k] = nc + k;
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const long long n = tile + static_cast<long long>(k) * P + p;
      off[k] = n < N ? static_cast<int>(n) : N - 1;
    }
  }
  const T* const fbase = kVecLoad ? feat + off[0] : feat;

  float acc[QC][VEC];
#pragma unroll
  for (int j = 0; j < QC; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[j][k] = 0.f;

  const size_t row_step = static_cast<size_t>(S) * static_cast<size_t>(N);
  for (int c0 = 0; c0 < C; c0 += tileC) {
    const int tc = min(tileC, C - c0);
    // stage queries[q0 + j, c0 + cl] as fp32 at smem[cl * QC + j] (zero for padded queries)
    for (int i = tid; i < tc * QC; i += kThreads) {
      const int cl = i / QC, j = i % QC;
      smem[i] = (q0 + j < Q) ? Elem<T>::load1(qry + static_cast<size_t>(q0 + j) * C + c0 + cl) : 0.f;
    }
    __syncthreads();

    // tileC is a multiple of S whenever C > tileC, so slice s stays on channels == s (mod S).
    const T* rp = fbase + static_cast<size_t>(c0 + s) * static_cast<size_t>(N);
    int cl = s;
    for (; cl + (U - 1) * S < tc; cl += U * S, rp += U * row_step) {
      RowLoad<T, kVecLoad> r[U];
#pragma unroll
      for (int u = 0; u < U; ++u) r[u].load(rp + u * row_step, off);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float f[VEC];
        r[u].get(f);
        accumulate<QC, VEC, kEucl>(acc, f, smem + (cl + u * S) * QC);
      }
    }
    for (; cl < tc; cl += S, rp += row_step) {
      RowLoad<T, kVecLoad> r;
      r.load(rp, off);
      float f[VEC];
      r.get(f);
      accumulate<QC, VEC, kEucl>(acc, f, smem + cl * QC);
    }
    __syncthreads();  // smem is restaged (next tile) or reused (reduction below)
  }

  reduce_slices<QC, VEC>(acc, smem, tid, P, S);

  // Epilogue: slice 0 (tid < P) holds the totals.
  float lmin[QC], lmax[QC];  // fminf/fmaxf skip NaNs; those are tracked in has_nan
  bool has_nan[QC];
#pragma unroll
  for (int j = 0; j < QC; ++j) { lmin[j] = pos_inf(); lmax[j] = neg_inf(); has_nan[j] = false; }

  if (tid < P) {
#pragma unroll
    for (int j = 0; j < QC; ++j) {
      if (q0 + j < Q) {
        float v[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float a = acc[j][k];
          if constexpr (kEucl) {
            v[k] = __fsqrt_rn(a);
          } else {
            v[k] = angular ? angular_from_inner(a) : a;
          }
        }
        store_row<VEC, kVecLoad>(v, sim + static_cast<size_t>(q0 + j) * static_cast<size_t>(N), n0, tile, P,
                                 p, N, lmin[j], lmax[j], has_nan[j]);
      }
    }
  }
  commit_minmax<QC>(lmin, lmax, has_nan, tid, q0, Q, minmax);
}

// ---------------------------------------------------------------------------------------------
// host side

// One launch for `nq` queries (chunks of QC along grid.y).
template <typename T, int QC, bool kEucl, bool kVecLoad>
cudaError_t launch_chunks(const T* feat, const T* qry, int C, int N, int nq, int angular, float* sim,
                          float* minmax, int num_sms, cudaStream_t stream) {
  constexpr int VEC = Elem<T>::kVec;
  const long long nqb = (nq + QC - 1) / QC;
  const long long nvec = (static_cast<long long>(N) + VEC - 1) / VEC;

  const int logP = split_log_p(nvec, nqb, C, kMinChannelsPerSlice, num_sms);
  const int P = 1 << logP, S = kThreads >> logP;
  const int tile_max = kQueryTileFloats / QC;  // >= 1024: a multiple of every S
  const int tileC = C < tile_max ? C : tile_max;
  size_t smem = static_cast<size_t>(tileC) * QC * sizeof(float);
  if (S > 1) {
    const size_t red = static_cast<size_t>(S / 2) * P * QC * VEC * sizeof(float);  // <= 32 KB
    if (red > smem) smem = red;
  }
  const dim3 grid(static_cast<unsigned>((nvec + P - 1) / P), static_cast<unsigned>(nqb));
  similarity_kernel<T, QC, kEucl, kVecLoad>
      <<<grid, kThreads, smem, stream>>>(feat, qry, C, N, nq, angular, sim, minmax, logP, tileC);
  return cudaGetLastError();
}

// Queries in chunks of 8 (one launch, grid.y = Q / 8), the remainder with the smallest QC >= it.
template <typename T, bool kEucl, bool kVecLoad>
cudaError_t launch_all(const T* feat, const T* qry, int C, int N, int Q, int angular, float* sim,
                       float* minmax, int num_sms, cudaStream_t stream) {
  const int full = (Q / 8) * 8;
  if (full > 0) {
    const cudaError_t e =
        launch_chunks<T, 8, kEucl, kVecLoad>(feat, qry, C, N, full, angular, sim, minmax, num_sms, stream);
    if (e != cudaSuccess) return e;
  }
  const int rem = Q - full;
  if (rem == 0) return cudaSuccess;
  const T* q = qry + static_cast<size_t>(full) * C;
  float* s = sim + static_cast<size_t>(full) * N;
  float* mm = minmax + 2 * static_cast<size_t>(full);
  if (rem == 1) return launch_chunks<T, 1, kEucl, kVecLoad>(feat, q, C, N, rem, angular, s, mm, num_sms, stream);
  if (rem == 2) return launch_chunks<T, 2, kEucl, kVecLoad>(feat, q, C, N, rem, angular, s, mm, num_sms, stream);
  if (rem <= 4) return launch_chunks<T, 4, kEucl, kVecLoad>(feat, q, C, N, rem, angular, s, mm, num_sms, stream);
  return launch_chunks<T, 8, kEucl, kVecLoad>(feat, q, C, N, rem, angular, s, mm, num_sms, stream);
}

template <typename T>
cudaError_t dispatch_similarity(const void* features, const void* queries, int C, int N, int Q, int metric,
                                float* sim, float* minmax, int num_sms, cudaStream_t stream) {
  const T* f = static_cast<const T*>(features);
  const T* q = static_cast<const T*>(queries);
  // 16-byte vector path: every feature row and every sim row must start 16-byte aligned.
  const bool vec = (N % Elem<T>::kVec) == 0 && aligned(features, 16) && aligned(sim, 16);
  const int angular = metric == FEATVIS_METRIC_ANGULAR ? 1 : 0;
  if (metric == FEATVIS_METRIC_EUCLIDEAN) {
    return vec ? launch_all<T, true, true>(f, q, C, N, Q, 0, sim, minmax, num_sms, stream)
               : launch_all<T, true, false>(f, q, C, N, Q, 0, sim, minmax, num_sms, stream);
  }
  return vec ? launch_all<T, false, true>(f, q, C, N, Q, angular, sim, minmax, num_sms, stream)
             : launch_all<T, false, false>(f, q, C, N, Q, angular, sim, minmax, num_sms, stream);
}

}  // namespace

extern "C" int featvis_pixel_similarity_cuda(const void* features, const void* queries, const float* scales,
                                             const float* query_scales, int64_t C, int64_t N, int64_t Q, int dtype,
                                             int metric, float* sim_out, float* minmax_out, void* stream) {
  if (C < 0 || N < 0 || Q < 0 || C > INT32_MAX || N > INT32_MAX || Q / 8 > kMaxGridY) return cudaErrorInvalidValue;
  if (dtype < FEATVIS_DTYPE_FLOAT32 || dtype > FEATVIS_DTYPE_INT8) return cudaErrorInvalidValue;
  if (metric < FEATVIS_METRIC_INNER || metric > FEATVIS_METRIC_EUCLIDEAN) return cudaErrorInvalidValue;
  const bool int8 = dtype == FEATVIS_DTYPE_INT8;
  if (int8) {
    if (metric == FEATVIS_METRIC_EUCLIDEAN || C > FEATVIS_INT8_MAX_C) return cudaErrorInvalidValue;
  } else if (scales != nullptr || query_scales != nullptr) {
    return cudaErrorInvalidValue;
  }
  if (Q == 0) return cudaSuccess;
  if (sim_out == nullptr || minmax_out == nullptr) return cudaErrorInvalidValue;
  if (N > 0 && C > 0 && (features == nullptr || queries == nullptr)) return cudaErrorInvalidValue;
  if (int8 && N > 0 && (scales == nullptr || query_scales == nullptr)) return cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);

  init_minmax_kernel<<<static_cast<unsigned>((Q + kThreads - 1) / kThreads), kThreads, 0, st>>>(
      minmax_out, static_cast<int>(Q));
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || N == 0) return err;

  int dev = 0, num_sms = 0;
  if ((err = cudaGetDevice(&dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if (num_sms < 1) num_sms = 1;

  const int c = static_cast<int>(C), n = static_cast<int>(N), q = static_cast<int>(Q);
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32:
      return dispatch_similarity<float>(features, queries, c, n, q, metric, sim_out, minmax_out, num_sms, st);
    case FEATVIS_DTYPE_FLOAT16:
      return dispatch_similarity<__half>(features, queries, c, n, q, metric, sim_out, minmax_out, num_sms, st);
    case FEATVIS_DTYPE_BFLOAT16:
      return dispatch_similarity<__nv_bfloat16>(features, queries, c, n, q, metric, sim_out, minmax_out, num_sms, st);
    default:
      return dispatch_similarity_i8(features, queries, scales, query_scales, c, n, q, metric, sim_out, minmax_out,
                                    num_sms, st);
  }
}

extern "C" const char* featvis_cuda_error_string(int err) {
  return cudaGetErrorString(static_cast<cudaError_t>(err));
}
