// Internals shared by the featvis-fast CUDA sources (similarity_cuda.cu, similarity_int8_cuda.cu,
// colorize_cuda.cu); not part of the C ABI (that is similarity_cuda.h). Launch constants, inline
// __device__ helpers (streaming loads, inf/NaN bits, the angular transform, the split-C reduction,
// the similarity epilogue: row stores and the block min/max commit), the host-side launch helpers,
// and the int8 dispatcher that featvis_pixel_similarity_cuda (similarity_cuda.cu) calls.
#ifndef FEATVIS_SIMILARITY_CUDA_COMMON_H_
#define FEATVIS_SIMILARITY_CUDA_COMMON_H_

#include <cuda_runtime.h>
#include <stdint.h>

namespace featvis_cuda {

constexpr int kThreads = 256;                // threads per block (both kernels)
constexpr int kWarps = kThreads / 32;
constexpr int kLogThreads = 8;
constexpr int kQueryTileFloats = 8192;       // staged queries per block: 32 KB of shared memory
constexpr int kMinLogP = 2;                  // >= 4 pixel vectors (64 B of a row) per block
constexpr int kMinChannelsPerSlice = 8;      // don't split C finer than this
constexpr int kMaxGridY = 65535;
constexpr float kTwoOverPi = 0.636619772367581343f;

__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }
// Bit test, so that it survives --use_fast_math.
__device__ __forceinline__ bool is_nan(float v) { return (__float_as_uint(v) & 0x7fffffffu) > 0x7f800000u; }

// ---------------------------------------------------------------------------------------------
// loads

// 16-byte streaming load through the read-only path without L1 allocation (each byte read once).
__device__ __forceinline__ uint4 ld_stream_v4(const void* ptr) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr));
  return r;
}

// ---------------------------------------------------------------------------------------------
// min/max, angular transform, split-C reduction, epilogue

// Float-as-ordered-int trick: non-negative floats order like their bits as signed ints, negative
// ones (sign bit set) in reverse as unsigned ints, so min/max work in place on the float's bits.
// NaN propagation (like torch.aminmax / the CPU backend): the NaNs 0xffffffff (min slot) and
// 0x7fffffff (max slot) are absorbing for these two functions, whatever order blocks commit in.
__device__ __forceinline__ void atomic_min_float(float* addr, float v) {
  if (__float_as_int(v) >= 0) atomicMin(reinterpret_cast<int*>(addr), __float_as_int(v));
  else atomicMax(reinterpret_cast<unsigned int*>(addr), __float_as_uint(v));
}
__device__ __forceinline__ void atomic_max_float(float* addr, float v) {
  if (__float_as_int(v) >= 0) atomicMax(reinterpret_cast<int*>(addr), __float_as_int(v));
  else atomicMin(reinterpret_cast<unsigned int*>(addr), __float_as_uint(v));
}
__device__ __forceinline__ float min_slot_nan() { return __int_as_float(static_cast<int>(0xffffffffu)); }
__device__ __forceinline__ float max_slot_nan() { return __int_as_float(0x7fffffff); }

// s = 1 - acosf(clamp(x, 0, 1)) * (2/pi), multiply and subtract rounded separately (no FMA).
// NaN -> x = 0. At x == 0 that is exactly 0 (1 - f32(pi/2) * f32(2/pi) rounds to 0); it is pinned
// so that it does not depend on how acosf(0) is rounded under --use_fast_math.
__device__ __forceinline__ float angular_from_inner(float a) {
  const float x = fminf(fmaxf(a, 0.0f), 1.0f);
  return x == 0.0f ? 0.0f : fminf(fmaxf(__fsub_rn(1.0f, __fmul_rn(acosf(x), kTwoOverPi)), 0.0f), 1.0f);
}

// Split-C reduction, a tree over slices: threads [h*P, 2h*P) hand their partial sums to
// threads [0, h*P) (same p); afterwards slice 0 (tid < P) holds the totals. Layout
// red[e * hP + t'] keeps it bank-conflict free. A = float (float kernels) or int (int8 kernels:
// exact int32 partials). Needs (S / 2) * P * QC * VEC elements of red; called by all threads.
template <int QC, int VEC, typename A>
__device__ __forceinline__ void reduce_slices(A (&acc)[QC][VEC], A* red, int tid, int P, int S) {
  for (int hP = (S >> 1) * P; hP >= P && S > 1; hP >>= 1) {
    if (tid >= hP && tid < 2 * hP) {
#pragma unroll
      for (int j = 0; j < QC; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) red[(j * VEC + k) * hP + (tid - hP)] = acc[j][k];
    }
    __syncthreads();
    if (tid < hP) {
#pragma unroll
      for (int j = 0; j < QC; ++j)
#pragma unroll
        for (int k = 0; k < VEC; ++k) acc[j][k] += red[(j * VEC + k) * hP + tid];
    }
    __syncthreads();
  }
}

// Epilogue helpers shared by the float and int8 kernels.
// Stores this thread's VEC values of one query row and folds them into its min/max/NaN state.
//  kVecLoad: VEC contiguous pixels from n0 (stored only if n0 < N; 16-byte aligned float4 stores);
//  otherwise: pixels tile + k * P + p, each stored if < N.
template <int VEC, bool kVecLoad>
__device__ __forceinline__ void store_row(const float (&v)[VEC], float* __restrict__ row, long long n0,
                                          long long tile, int P, int p, int N, float& lmin, float& lmax,
                                          bool& has_nan) {
  if constexpr (kVecLoad) {
    if (n0 < N) {
#pragma unroll
      for (int k = 0; k < VEC; k += 4)
        *reinterpret_cast<float4*>(row + n0 + k) = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        lmin = fminf(lmin, v[k]);
        lmax = fmaxf(lmax, v[k]);
        has_nan |= is_nan(v[k]);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const long long n = tile + static_cast<long long>(k) * P + p;
      if (n < N) {
        row[n] = v[k];
        lmin = fminf(lmin, v[k]);
        lmax = fmaxf(lmax, v[k]);
        has_nan |= is_nan(v[k]);
      }
    }
  }
}

// Block min/max per query: warp shuffles, then across warps in shared memory, then one pair of
// global atomics per block and query. Called by all threads of the block.
template <int QC>
__device__ __forceinline__ void commit_minmax(float (&lmin)[QC], float (&lmax)[QC], bool (&has_nan)[QC], int tid,
                                              int q0, int Q, float* __restrict__ minmax) {
  __shared__ float mm_s[2][kWarps][QC];
  __shared__ int nan_s[kWarps][QC];
  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int j = 0; j < QC; ++j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      lmin[j] = fminf(lmin[j], __shfl_xor_sync(0xffffffffu, lmin[j], o));
      lmax[j] = fmaxf(lmax[j], __shfl_xor_sync(0xffffffffu, lmax[j], o));
    }
    has_nan[j] = __any_sync(0xffffffffu, has_nan[j]);
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < QC; ++j) {
      mm_s[0][warp][j] = lmin[j];
      mm_s[1][warp][j] = lmax[j];
      nan_s[warp][j] = has_nan[j] ? 1 : 0;
    }
  }
  __syncthreads();
  if (tid < QC && q0 + tid < Q) {
    float mn = mm_s[0][0][tid], mx = mm_s[1][0][tid];
    int nan = nan_s[0][tid];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      mn = fminf(mn, mm_s[0][w][tid]);
      mx = fmaxf(mx, mm_s[1][w][tid]);
      nan |= nan_s[w][tid];
    }
    if (nan) {
      mn = min_slot_nan();
      mx = max_slot_nan();
    }
    if (nan || mn <= mx) {  // mn > mx: this block wrote no value (cannot happen for a valid grid)
      atomic_min_float(minmax + 2 * (q0 + tid), mn);
      atomic_max_float(minmax + 2 * (q0 + tid) + 1, mx);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// host side

inline bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

// Channel split: halve the pixel tile (doubling the slices S) while the grid has fewer than
// 2 blocks per SM, the tile keeps >= 4 pixel vectors and every slice keeps >= min_units channel
// units (channels for the float kernels: 8; channel quads for int8: 2). Returns log2(P).
inline int split_log_p(long long nvec, long long nqb, long long units, long long min_units, int num_sms) {
  int logP = kLogThreads;  // P = 256, S = 1
  while (logP > kMinLogP) {
    const long long blocks = ((nvec + (1LL << logP) - 1) >> logP) * nqb;
    const long long s_next = 1LL << (kLogThreads - logP + 1);
    if (blocks >= 2LL * num_sms || s_next * min_units > units) break;
    --logP;
  }
  return logP;
}

// int8 similarity for Q queries: queries in chunks of 8, the remainder with the smallest QC >= it
// (similarity_int8_cuda.cu). Arguments as checked by featvis_pixel_similarity_cuda; N > 0, Q > 0.
cudaError_t dispatch_similarity_i8(const void* features, const void* queries, const float* scales,
                                   const float* qscales, int C, int N, int Q, int metric, float* sim, float* minmax,
                                   int num_sms, cudaStream_t stream);

}  // namespace featvis_cuda

#endif  // FEATVIS_SIMILARITY_CUDA_COMMON_H_
