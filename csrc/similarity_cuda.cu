// featvis-fast CUDA kernels: per-pixel query similarity (+ per-query min/max) and LUT colorize.
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
// int8 storage (similarity_i8_kernel) uses the same layout with channels taken in quads: per
// pixel the quad's 4 bytes are gathered with byte permutes and __dp4a'd against the packed query
// quad, accumulating exact int32 sums (split-C partials are reduced as int32 too); the per-pixel
// and per-query scales are applied in the epilogue.

#include "similarity_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

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
// loads / conversions

// 16-byte streaming load through the read-only path without L1 allocation (each byte read once).
__device__ __forceinline__ uint4 ld_stream_v4(const void* ptr) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr));
  return r;
}

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
// int8 storage: channels are consumed in quads (4 rows); per pixel, the quad's 4 bytes are gathered
// into one word (byte r = channel 4g + r) and multiplied with the query's packed quad by __dp4a
// (signed, exact int32). Per quad and thread: 4 row loads, 2 byte-permutes per pixel, QC dp4a per
// pixel.

// 8-byte variant of ld_stream_v4.
__device__ __forceinline__ uint2 ld_stream_v2(const void* ptr) {
  uint2 r;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(ptr));
  return r;
}

// 4x4 byte transpose: a, b, c, d hold pixels 0..3 of channels 0..3; out[k] = pixel k's channels
// 0..3 (byte r = channel r). 8 PRMTs for 16 bytes.
__device__ __forceinline__ void transpose4x4(unsigned a, unsigned b, unsigned c, unsigned d, int* out) {
  const unsigned t0 = __byte_perm(a, b, 0x5140);  // a0 b0 a1 b1
  const unsigned t1 = __byte_perm(a, b, 0x7362);  // a2 b2 a3 b3
  const unsigned t2 = __byte_perm(c, d, 0x5140);  // c0 d0 c1 d1
  const unsigned t3 = __byte_perm(c, d, 0x7362);  // c2 d2 c3 d3
  out[0] = static_cast<int>(__byte_perm(t0, t2, 0x5410));  // a0 b0 c0 d0
  out[1] = static_cast<int>(__byte_perm(t0, t2, 0x7632));  // a1 b1 c1 d1
  out[2] = static_cast<int>(__byte_perm(t1, t3, 0x5410));  // a2 b2 c2 d2
  out[3] = static_cast<int>(__byte_perm(t1, t3, 0x7632));  // a3 b3 c3 d3
}

// One channel quad's worth of this thread's VEC pixels. load(): row r of the quad is
// row0 + min(r, last) * N (last < 3 only for the partial last quad, whose missing channels have
// zero query bytes, so re-reading row C-1 adds exactly 0). get(): px[k] = packed quad of pixel k.
//  kVecLoad: one 16-byte (VEC 16) or 8-byte (VEC 8) load per row of VEC contiguous pixels;
//  otherwise: VEC byte loads per row, of pixels p, p+P, p+2P, ... (coalesced across the warp).
template <int VEC, bool kVecLoad> struct QuadLoad;

template <> struct QuadLoad<16, true> {
  uint4 raw[4];
  __device__ __forceinline__ void load(const int8_t* row0, size_t N, int last, const int (&)[16]) {
#pragma unroll
    for (int r = 0; r < 4; ++r) raw[r] = ld_stream_v4(row0 + static_cast<size_t>(min(r, last)) * N);
  }
  __device__ __forceinline__ void get(int (&px)[16]) const {
    transpose4x4(raw[0].x, raw[1].x, raw[2].x, raw[3].x, px + 0);
    transpose4x4(raw[0].y, raw[1].y, raw[2].y, raw[3].y, px + 4);
    transpose4x4(raw[0].z, raw[1].z, raw[2].z, raw[3].z, px + 8);
    transpose4x4(raw[0].w, raw[1].w, raw[2].w, raw[3].w, px + 12);
  }
};

template <> struct QuadLoad<8, true> {
  uint2 raw[4];
  __device__ __forceinline__ void load(const int8_t* row0, size_t N, int last, const int (&)[8]) {
#pragma unroll
    for (int r = 0; r < 4; ++r) raw[r] = ld_stream_v2(row0 + static_cast<size_t>(min(r, last)) * N);
  }
  __device__ __forceinline__ void get(int (&px)[8]) const {
    transpose4x4(raw[0].x, raw[1].x, raw[2].x, raw[3].x, px + 0);
    transpose4x4(raw[0].y, raw[1].y, raw[2].y, raw[3].y, px + 4);
  }
};

template <int VEC> struct QuadLoad<VEC, false> {
  unsigned b[4][VEC];  // zero-extended bytes
  __device__ __forceinline__ void load(const int8_t* row0, size_t N, int last, const int (&off)[VEC]) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const unsigned char* row = reinterpret_cast<const unsigned char*>(row0 + static_cast<size_t>(min(r, last)) * N);
#pragma unroll
      for (int k = 0; k < VEC; ++k) b[r][k] = __ldg(row + off[k]);
    }
  }
  __device__ __forceinline__ void get(int (&px)[VEC]) const {
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      px[k] = static_cast<int>(
          __byte_perm(__byte_perm(b[0][k], b[1][k], 0x0040), __byte_perm(b[2][k], b[3][k], 0x0040), 0x5410));
  }
};

// acc[j][k] += <pixel k's quad, query j's quad> (signed bytes, exact int32).
template <int QC, int VEC>
__device__ __forceinline__ void accumulate_i8(int (&acc)[QC][VEC], const int (&px)[VEC], const int* __restrict__ qs) {
  int qv[QC];
  if constexpr (QC % 4 == 0) {
#pragma unroll
    for (int j = 0; j < QC; j += 4) {
      const int4 t = *reinterpret_cast<const int4*>(qs + j);
      qv[j] = t.x; qv[j + 1] = t.y; qv[j + 2] = t.z; qv[j + 3] = t.w;
    }
  } else if constexpr (QC == 2) {
    const int2 t = *reinterpret_cast<const int2*>(qs);
    qv[0] = t.x; qv[1] = t.y;
  } else {
#pragma unroll
    for (int j = 0; j < QC; ++j) qv[j] = qs[j];
  }
#pragma unroll
  for (int j = 0; j < QC; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[j][k] = __dp4a(px[k], qv[j], acc[j][k]);
}

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

// int8 storage. VEC pixels per thread: 16 (one 16-byte load per row) for QC <= 4, 8 (8-byte loads)
// for QC == 8, so that every variant keeps <= 64 int32 accumulators like the fp16 kernel; the
// scalar fallback uses VEC 8. U: channel quads in flight per thread (64 B of loads, 128 B for
// QC <= 2, as in the float kernels; 32 B of byte loads on the scalar path).
template <int QC, int VEC, bool kVecLoad> struct I8Cfg {
  static_assert(QC * VEC <= 64 && (VEC == 8 || VEC == 16), "int8 tile");
  static constexpr int kUnroll = kVecLoad ? ((QC <= 2 ? 128 : 64) / (4 * VEC)) : 1;
  static constexpr int kMinBlocks = (!kVecLoad || QC * VEC >= 64) ? 2 : 3;
};

// grid: (ceil(ceil(N / VEC) / P), ceil(Q / QC)); block: kThreads; dynamic shared memory:
// max(tileQ * QC, S > 1 ? (S / 2) * P * QC * VEC : 0) ints (tileQ: channel quads staged per pass).
// Slice s owns the quads g == s (mod S) (channels 4g .. 4g+3); the staged query quads are packed
// int8x4 words at smem[g_local * QC + j], zero for channels >= C and padded queries.
// qry / qscales / sim / minmax point at this launch's first query; Q is this launch's query count.
template <int QC, int VEC, bool kVecLoad>
__global__ void __launch_bounds__(kThreads, I8Cfg<QC, VEC, kVecLoad>::kMinBlocks)
similarity_i8_kernel(const int8_t* __restrict__ feat, const int8_t* __restrict__ qry,
                     const float* __restrict__ scales, const float* __restrict__ qscales, int C, int N, int Q,
                     int angular, float* __restrict__ sim, float* __restrict__ minmax, int logP, int tileQ) {
  constexpr int U = I8Cfg<QC, VEC, kVecLoad>::kUnroll;

  extern __shared__ float4 smem_v4[];
  int* const smem = reinterpret_cast<int*>(smem_v4);

  const int tid = threadIdx.x;
  const int P = 1 << logP;
  const int S = kThreads >> logP;
  const int p = tid & (P - 1);
  const int s = tid >> logP;
  const int q0 = blockIdx.y * QC;
  const long long tile = static_cast<long long>(blockIdx.x) * P * VEC;

  // Pixels of this thread, clamped into range as in similarity_kernel.
  int off[VEC];
  long long n0 = 0;
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
  const int8_t* const fbase = kVecLoad ? feat + off[0] : feat;

  int acc[QC][VEC];
#pragma unroll
  for (int j = 0; j < QC; ++j)
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[j][k] = 0;

  const int nquads = (C + 3) >> 2, full_quads = C >> 2;
  const size_t rowN = static_cast<size_t>(N);
  const size_t quad_step = static_cast<size_t>(4 * S) * rowN;  // next quad of this slice
  for (int g0 = 0; g0 < nquads; g0 += tileQ) {
    const int tq = min(tileQ, nquads - g0);
    for (int i = tid; i < tq * QC; i += kThreads) {
      const int g = i / QC, j = i % QC;
      const int c = 4 * (g0 + g);
      unsigned w = 0;
      if (q0 + j < Q) {
        const unsigned char* qp = reinterpret_cast<const unsigned char*>(qry + static_cast<size_t>(q0 + j) * C + c);
#pragma unroll
        for (int r = 0; r < 4; ++r)
          if (c + r < C) w |= static_cast<unsigned>(__ldg(qp + r)) << (8 * r);
      }
      smem[i] = static_cast<int>(w);
    }
    __syncthreads();

    // tileQ is a multiple of S whenever nquads > tileQ, so slice s stays on quads == s (mod S).
    const int tq_full = min(tq, full_quads - g0);  // quads of this pass with all 4 channels < C
    const int8_t* rp = fbase + static_cast<size_t>(4 * (g0 + s)) * rowN;
    int g = s;
    if constexpr (U > 1) {
      for (; g + (U - 1) * S < tq_full; g += U * S, rp += U * quad_step) {
        QuadLoad<VEC, kVecLoad> r[U];
#pragma unroll
        for (int u = 0; u < U; ++u) r[u].load(rp + u * quad_step, rowN, 3, off);
#pragma unroll
        for (int u = 0; u < U; ++u) {
          int px[VEC];
          r[u].get(px);
          accumulate_i8<QC, VEC>(acc, px, smem + (g + u * S) * QC);
        }
      }
    }
    for (; g < tq_full; g += S, rp += quad_step) {
      QuadLoad<VEC, kVecLoad> r;
      r.load(rp, rowN, 3, off);
      int px[VEC];
      r.get(px);
      accumulate_i8<QC, VEC>(acc, px, smem + g * QC);
    }
    if (g < tq) {  // the partial last quad (C % 4 != 0), local index tq_full == tq - 1
      QuadLoad<VEC, kVecLoad> r;
      r.load(rp, rowN, C - 1 - 4 * (g0 + g), off);
      int px[VEC];
      r.get(px);
      accumulate_i8<QC, VEC>(acc, px, smem + g * QC);
    }
    __syncthreads();  // smem is restaged (next pass) or reused (reduction below)
  }

  reduce_slices<QC, VEC>(acc, smem, tid, P, S);  // exact: int32 partials

  float lmin[QC], lmax[QC];
  bool has_nan[QC];
#pragma unroll
  for (int j = 0; j < QC; ++j) { lmin[j] = pos_inf(); lmax[j] = neg_inf(); has_nan[j] = false; }

  if (tid < P) {
    float sc[VEC];  // scales of this thread's (clamped) pixels
    if constexpr (kVecLoad) {
      if ((reinterpret_cast<uintptr_t>(scales) & 15) == 0) {  // off[0] is a multiple of VEC >= 8
#pragma unroll
        for (int k = 0; k < VEC; k += 4) {
          const float4 t = __ldg(reinterpret_cast<const float4*>(scales + off[k]));
          sc[k] = t.x; sc[k + 1] = t.y; sc[k + 2] = t.z; sc[k + 3] = t.w;
        }
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) sc[k] = __ldg(scales + off[k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k) sc[k] = __ldg(scales + off[k]);
    }
#pragma unroll
    for (int j = 0; j < QC; ++j) {
      if (q0 + j < Q) {
        const float qs = __ldg(qscales + q0 + j);
        float v[VEC];
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const float x = __fmul_rn(__fmul_rn(__int2float_rn(acc[j][k]), sc[k]), qs);
          v[k] = angular ? angular_from_inner(x) : x;
        }
        store_row<VEC, kVecLoad>(v, sim + static_cast<size_t>(q0 + j) * static_cast<size_t>(N), n0, tile, P,
                                 p, N, lmin[j], lmax[j], has_nan[j]);
      }
    }
  }
  commit_minmax<QC>(lmin, lmax, has_nan, tid, q0, Q, minmax);
}

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

// int8: one launch for `nq` queries (chunks of QC along grid.y).
template <int QC, int VEC, bool kVecLoad>
cudaError_t launch_chunks_i8(const int8_t* feat, const int8_t* qry, const float* scales, const float* qscales,
                             int C, int N, int nq, int angular, float* sim, float* minmax, int num_sms,
                             cudaStream_t stream) {
  const long long nqb = (nq + QC - 1) / QC;
  const long long nvec = (static_cast<long long>(N) + VEC - 1) / VEC;
  const int nquads = (C + 3) / 4;
  const int logP = split_log_p(nvec, nqb, nquads, kMinChannelsPerSlice / 4, num_sms);
  const int P = 1 << logP, S = kThreads >> logP;
  const int tile_max = kQueryTileFloats / QC;  // >= 1024 quads: a multiple of every S
  const int tileQ = nquads < tile_max ? nquads : tile_max;
  size_t smem = static_cast<size_t>(tileQ) * QC * sizeof(int);
  if (S > 1) {
    const size_t red = static_cast<size_t>(S / 2) * P * QC * VEC * sizeof(int);  // <= 32 KB
    if (red > smem) smem = red;
  }
  const dim3 grid(static_cast<unsigned>((nvec + P - 1) / P), static_cast<unsigned>(nqb));
  similarity_i8_kernel<QC, VEC, kVecLoad><<<grid, kThreads, smem, stream>>>(
      feat, qry, scales, qscales, C, N, nq, angular, sim, minmax, logP, tileQ);
  return cudaGetLastError();
}

// Picks the int8 path of one launch: 16-byte loads (QC <= 4; N % 16 == 0, features 16-byte
// aligned), 8-byte loads (N % 8 == 0, features 8-byte aligned), else byte loads. The vector paths
// also need sim 16-byte aligned (float4 stores of VEC contiguous pixels).
template <int QC>
cudaError_t launch_qc_i8(const int8_t* feat, const int8_t* qry, const float* scales, const float* qscales, int C,
                         int N, int nq, int angular, float* sim, float* minmax, int num_sms, cudaStream_t stream) {
  const bool sim16 = aligned(sim, 16);
  if constexpr (QC <= 4) {
    if (sim16 && N % 16 == 0 && aligned(feat, 16))
      return launch_chunks_i8<QC, 16, true>(feat, qry, scales, qscales, C, N, nq, angular, sim, minmax, num_sms,
                                            stream);
  }
  if (sim16 && N % 8 == 0 && aligned(feat, 8))
    return launch_chunks_i8<QC, 8, true>(feat, qry, scales, qscales, C, N, nq, angular, sim, minmax, num_sms,
                                         stream);
  return launch_chunks_i8<QC, 8, false>(feat, qry, scales, qscales, C, N, nq, angular, sim, minmax, num_sms,
                                        stream);
}

// Queries in chunks of 8 (one launch), the remainder with the smallest QC >= it, as for floats.
cudaError_t dispatch_similarity_i8(const void* features, const void* queries, const float* scales,
                                   const float* qscales, int C, int N, int Q, int metric, float* sim, float* minmax,
                                   int num_sms, cudaStream_t stream) {
  const int8_t* f = static_cast<const int8_t*>(features);
  const int8_t* q = static_cast<const int8_t*>(queries);
  const int angular = metric == FEATVIS_METRIC_ANGULAR ? 1 : 0;
  const int full = (Q / 8) * 8;
  if (full > 0) {
    const cudaError_t e = launch_qc_i8<8>(f, q, scales, qscales, C, N, full, angular, sim, minmax, num_sms, stream);
    if (e != cudaSuccess) return e;
  }
  const int rem = Q - full;
  if (rem == 0) return cudaSuccess;
  q += static_cast<size_t>(full) * C;
  qscales += full;
  sim += static_cast<size_t>(full) * N;
  minmax += 2 * static_cast<size_t>(full);
  if (rem == 1) return launch_qc_i8<1>(f, q, scales, qscales, C, N, rem, angular, sim, minmax, num_sms, stream);
  if (rem == 2) return launch_qc_i8<2>(f, q, scales, qscales, C, N, rem, angular, sim, minmax, num_sms, stream);
  if (rem <= 4) return launch_qc_i8<4>(f, q, scales, qscales, C, N, rem, angular, sim, minmax, num_sms, stream);
  return launch_qc_i8<8>(f, q, scales, qscales, C, N, rem, angular, sim, minmax, num_sms, stream);
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

extern "C" const char* featvis_cuda_error_string(int err) {
  return cudaGetErrorString(static_cast<cudaError_t>(err));
}
