// featvis-fast CUDA kernels: per-pixel query similarity for int8 feature storage with per-pixel
// and per-query scales (dtype FEATVIS_DTYPE_INT8), called from featvis_pixel_similarity_cuda in
// similarity_cuda.cu, which checks the arguments and initialises minmax. The block layout is that
// of the float kernels described there.
//
// int8 storage (similarity_i8_kernel) uses the same layout with channels taken in quads: per
// pixel the quad's 4 bytes are gathered with byte permutes and __dp4a'd against the packed query
// quad, accumulating exact int32 sums (split-C partials are reduced as int32 too); the per-pixel
// and per-query scales are applied in the epilogue.

#include "similarity_cuda.h"
#include "similarity_cuda_common.h"

#include <cuda_runtime.h>
#include <stdint.h>

using namespace featvis_cuda;

namespace {

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

// ---------------------------------------------------------------------------------------------
// kernels

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

// ---------------------------------------------------------------------------------------------
// host side

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

}  // namespace

namespace featvis_cuda {

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

}  // namespace featvis_cuda
