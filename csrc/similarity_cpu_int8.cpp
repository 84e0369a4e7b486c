// featvis-fast: the int8-storage similarity kernel (INNER/ANGULAR): exact int32
// sums of int8 codes (madd_epi16 on interleaved channel pairs, AVX2 or
// AVX-512BW; portable scalar path otherwise), then the finalize pass applies the
// per-pixel and per-query scales, the metric transform and min/max.
// The design is described in similarity_cpu.h.

#include "similarity_cpu.h"
#include "similarity_cpu_avx2.h"

#include <algorithm>
#include <vector>

namespace featvis {
namespace cpu {
namespace {

// int8 queries are kept as packed channel pairs: qp[k*Q + j] holds
// (q_j[2k] & 0xffff) | (q_j[2k+1] << 16), with q_j[C] = 0 for odd C -- the
// operand of madd_epi16.
inline int32_t pack_pair(int8_t lo, int8_t hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(int16_t{lo})) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(int16_t{hi})) << 16));
}
inline int32_t pair_elem(int32_t packed, int64_t c) {
  return (c & 1) ? (packed >> 16) : static_cast<int32_t>(static_cast<int16_t>(packed & 0xffff));
}

// Portable exact int8 accumulation (int32 sums in out, same layout as
// accumulate_scalar); c0 must be even (channel blocks are).
void accumulate_i8_scalar(const int8_t* __restrict f, int64_t ldf, int64_t npix,
                          int64_t c0, int64_t c1, const int32_t* __restrict qp,
                          int64_t ldq, int nq, int32_t* __restrict out, int64_t ldo,
                          bool init) {
  constexpr int64_t kChunk = 256;
  for (int64_t p0 = 0; p0 < npix; p0 += kChunk) {
    const int64_t np = std::min(kChunk, npix - p0);
    if (init) {
      for (int j = 0; j < nq; ++j)
        std::fill(out + j * ldo + p0, out + j * ldo + p0 + np, 0);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const int8_t* fr = f + c * ldf + p0;
      const int32_t* qc = qp + (c >> 1) * ldq;
      for (int j = 0; j < nq; ++j) {
        const int32_t qv = pair_elem(qc[j], c);
        int32_t* o = out + j * ldo + p0;
        for (int64_t p = 0; p < np; ++p) o[p] += static_cast<int32_t>(fr[p]) * qv;
      }
    }
  }
}

// int8 finalize: o[p] (holding the int32 sum) becomes the float similarity
// x = ((float)acc * scale[p]) * qscale, transformed.  acc and o are the same
// memory (read as int32, written as float).
void finalize_row_i8_scalar(float* o, int64_t n, const float* __restrict scale,
                            float qscale, int64_t metric, float& mn, float& mx,
                            bool& nan) {
  for (int64_t p = 0; p < n; ++p) {
    int32_t a;
    std::memcpy(&a, o + p, sizeof(a));
    float x = static_cast<float>(a) * scale[p];
    x = x * qscale;
    const float v = apply_metric_s(x, metric);
    o[p] = v;
    minmax_s(v, mn, mx, nan);
  }
}

#if FV_HAVE_AVX2
// ---- int8 kernel -----------------------------------------------------------
// Vector traits.  widen(r0, r1) reads kUnitPx int8 pixels of two channel rows
// and returns them as two vectors of (f[c,n], f[c+1,n]) int16 pairs, so that
// madd_epi16 with a broadcast (q[c], q[c+1]) pair gives one int32 per pixel.
// The two result vectors of a unit are stored consecutively in the int32
// accumulator buffer; the 512-bit unpack is per 128-bit lane, so there the
// 8-pixel chunks of a unit are stored in the order 0,2,1,3 (undone by
// unit_chunk in the finalize pass).
struct I8x256 {
  using V = __m256i;
  static constexpr int kPx = 8;        // int32 lanes = pixels per vector
  static constexpr int kUnitPx = 16;   // pixels per widen() (2 vectors)
  static constexpr int kRegs = kVecRegs;
  static inline void widen(const int8_t* r0, const int8_t* r1, V& lo, V& hi) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r0));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1));
    lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b));  // pixels 0-7
    hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, b));  // pixels 8-15
  }
  static inline V zero() { return _mm256_setzero_si256(); }
  static inline V bcast(const int32_t* p) { return _mm256_set1_epi32(*p); }
  static inline V madd_add(V acc, V a, V b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
  }
  static inline V load(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  static inline void store(int32_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
};

#if FV_HAVE_AVX512BW
struct I8x512 {
  using V = __m512i;
  static constexpr int kPx = 16;
  static constexpr int kUnitPx = 32;
  static constexpr int kRegs = 32;
  static inline void widen(const int8_t* r0, const int8_t* r1, V& lo, V& hi) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r1));
    lo = _mm512_cvtepi8_epi16(_mm256_unpacklo_epi8(a, b));  // pixels 0-7, 16-23
    hi = _mm512_cvtepi8_epi16(_mm256_unpackhi_epi8(a, b));  // pixels 8-15, 24-31
  }
  static inline V zero() { return _mm512_setzero_si512(); }
  static inline V bcast(const int32_t* p) { return _mm512_set1_epi32(*p); }
  static inline V madd_add(V acc, V a, V b) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
  }
  static inline V load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static inline void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
};
using I8Vec = I8x512;
#else
using I8Vec = I8x256;
#endif

// Buffer position (in 8-pixel chunks) of pixel chunk i of a unit.
template <int kUnitPx>
constexpr int unit_chunk(int i) { return kUnitPx == 32 ? ((i & 1) << 1) | (i >> 1) : i; }

template <typename VT>
constexpr int i8_line_vecs() { return 64 / VT::kPx; }
template <typename VT>
constexpr int i8_qchunk() { return qchunk_lines(i8_line_vecs<VT>(), VT::kRegs); }

// acc[j][*] += f[r0 / r1 pixels] . (q_j[c], q_j[c+1]) for one channel pair.
template <typename VT, int NQ, int RV>
__attribute__((always_inline)) inline void pair_step_i8(
    const int8_t* r0, const int8_t* r1, const int32_t* __restrict qc,
    typename VT::V (&acc)[NQ][RV]) {
  typename VT::V fv[RV];
#pragma GCC unroll 8
  for (int u = 0; u < RV / 2; ++u)
    VT::widen(r0 + u * VT::kUnitPx, r1 + u * VT::kUnitPx, fv[2 * u], fv[2 * u + 1]);
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j) {
    const typename VT::V qb = VT::bcast(qc + j);
#pragma GCC unroll 8
    for (int r = 0; r < RV; ++r) acc[j][r] = VT::madd_add(acc[j][r], fv[r], qb);
  }
}

// One register block: NQ queries x RV/2 units over channels [c0, c1) (c0 even).
template <typename VT, int NQ, int RV, bool PF>
__attribute__((always_inline)) inline void block_i8(
    const int8_t* __restrict f, int64_t ldf, int64_t c0, int64_t c1,
    const int32_t* __restrict qp, int64_t ldq, int32_t* __restrict out,
    int64_t ldo, bool init) {
  static_assert(RV % 2 == 0, "int8 blocks are whole units");
  typename VT::V acc[NQ][RV];
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < RV; ++r)
      acc[j][r] = init ? VT::zero() : VT::load(out + j * ldo + VT::kPx * r);
  constexpr int kBlockBytes = RV * VT::kPx;
  int64_t c = c0;
  for (; c + 1 < c1; c += 2) {
    const int8_t* r0 = f + c * ldf;
    if (PF) {  // see block_avx2 (similarity_cpu_float.cpp)
      const uintptr_t pf0 = reinterpret_cast<uintptr_t>(r0) + kPrefetchBytesI8;
#pragma GCC unroll 8
      for (int e = 0; e < kBlockBytes; e += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(pf0 + e), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(pf0 + ldf + e), _MM_HINT_T0);
      }
    }
    pair_step_i8<VT>(r0, r0 + ldf, qp + (c >> 1) * ldq, acc);
  }
  if (c < c1) {  // odd C: last channel alone; its pair's q[c+1] is 0, so any row will do
    const int8_t* r0 = f + c * ldf;
    pair_step_i8<VT>(r0, r0, qp + (c >> 1) * ldq, acc);
  }
#pragma GCC unroll 8
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < RV; ++r) VT::store(out + j * ldo + VT::kPx * r, acc[j][r]);
}

// Sweep nunit full units of the tile for NQ queries, channels [c0,c1).
template <typename VT, bool PF>
struct I8Sweep {
  template <int NQ>
  static void run(const int8_t* f, int64_t ldf, int64_t nunit, int64_t c0, int64_t c1,
                  const int32_t* qp, int64_t ldq, int32_t* out, int64_t ldo, bool init) {
    constexpr int RV = rv_for_lines(NQ, i8_line_vecs<VT>(), VT::kRegs);
    constexpr int kUnits = RV / 2;
    int64_t u = 0;
    for (; u + kUnits <= nunit; u += kUnits)
      block_i8<VT, NQ, RV, PF>(f + VT::kUnitPx * u, ldf, c0, c1, qp, ldq,
                               out + VT::kUnitPx * u, ldo, init);
    for (; u < nunit; ++u)
      block_i8<VT, NQ, 2, PF>(f + VT::kUnitPx * u, ldf, c0, c1, qp, ldq,
                              out + VT::kUnitPx * u, ldo, init);
  }
};

template <bool PF>
void sweep_i8_dispatch(int nq, const int8_t* f, int64_t ldf, int64_t nunit, int64_t c0,
                       int64_t c1, const int32_t* qp, int64_t ldq, int32_t* out,
                       int64_t ldo, bool init) {
  dispatch_nq<I8Sweep<I8Vec, PF>, i8_qchunk<I8Vec>()>(nq, f, ldf, nunit, c0, c1, qp, ldq,
                                                      out, ldo, init);
}

// int8 finalize of nunit full units (I8Vec layout) + scalar tail of n.
void finalize_row_i8_avx2(float* o, int64_t nunit, int64_t n,
                          const float* __restrict scale, float qscale, int64_t metric,
                          float& mn, float& mx, bool& nan) {
  constexpr int kU = I8Vec::kUnitPx;
  constexpr int kChunks = kU / 8;
  const __m256 vqs = _mm256_set1_ps(qscale);
  MinMaxV mm;
  for (int64_t u = 0; u < nunit; ++u) {
    float* ou = o + u * kU;
    __m256 x[kChunks];
#pragma GCC unroll 4
    for (int i = 0; i < kChunks; ++i)  // (all loads before the in-place stores)
      x[i] = _mm256_cvtepi32_ps(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(ou + 8 * unit_chunk<kU>(i))));
#pragma GCC unroll 4
    for (int i = 0; i < kChunks; ++i) {
      __m256 v = _mm256_mul_ps(x[i], _mm256_loadu_ps(scale + u * kU + 8 * i));
      v = apply_metric_v(_mm256_mul_ps(v, vqs), metric);
      _mm256_storeu_ps(ou + 8 * i, v);
      mm.add(v);
    }
  }
  mm.merge_into(mn, mx, nan);
  const int64_t done = nunit * kU;
  if (done < n)
    finalize_row_i8_scalar(o + done, n - done, scale + done, qscale, metric, mn, mx, nan);
}
#endif  // FV_HAVE_AVX2

// int8 storage: qp is (ceil(C/2), Q) packed query pairs; sim doubles as the
// int32 accumulator buffer until the finalize pass converts it in place.
void similarity_i8_impl(const int8_t* f, const int32_t* qp, const float* scales,
                        const float* qscales, int64_t C, int64_t N, int64_t Q,
                        int64_t metric, float* sim, float* minmax) {
  const TilePlan plan = plan_tiles(C, N, Q);
  const int64_t cblock = plan.cblock;
  int32_t* acc = reinterpret_cast<int32_t*>(sim);
  auto accumulate = [&](int64_t n0, int64_t len) {
    const int8_t* ft = f + n0;
#if FV_HAVE_AVX2
    constexpr int64_t qchunk = i8_qchunk<I8Vec>();
    const int64_t nunit = len / I8Vec::kUnitPx;
    const int64_t done = nunit * I8Vec::kUnitPx;
    if (nunit > 0) {
      for (int64_t c0 = 0; c0 < C; c0 += cblock) {
        const int64_t c1 = std::min(C, c0 + cblock);
        for (int64_t q0 = 0; q0 < Q; q0 += qchunk) {
          const int nq = static_cast<int>(std::min<int64_t>(qchunk, Q - q0));
          int32_t* out = acc + q0 * N + n0;
          if (q0 == 0)
            sweep_i8_dispatch<true>(nq, ft, N, nunit, c0, c1, qp + q0, Q, out, N, c0 == 0);
          else
            sweep_i8_dispatch<false>(nq, ft, N, nunit, c0, c1, qp + q0, Q, out, N, c0 == 0);
        }
      }
    }
    if (done < len) {  // trailing pixels of the last tile (< one unit)
      for (int64_t q0 = 0; q0 < Q; q0 += kQChunk) {
        const int nq = static_cast<int>(std::min<int64_t>(kQChunk, Q - q0));
        accumulate_i8_scalar(ft + done, N, len - done, 0, C, qp + q0, Q, nq,
                             acc + q0 * N + n0 + done, N, /*init=*/true);
      }
    }
#else
    for (int64_t c0 = 0; c0 < C; c0 += cblock) {
      const int64_t c1 = std::min(C, c0 + cblock);
      for (int64_t q0 = 0; q0 < Q; q0 += kQChunk) {
        const int nq = static_cast<int>(std::min<int64_t>(kQChunk, Q - q0));
        accumulate_i8_scalar(ft, N, len, c0, c1, qp + q0, Q, nq, acc + q0 * N + n0,
                             N, /*init=*/c0 == 0);
      }
    }
#endif
  };
  auto finalize = [&](int64_t q, int64_t n0, int64_t len, float& mn, float& mx, bool& nan) {
#if FV_HAVE_AVX2
    finalize_row_i8_avx2(sim + q * N + n0, len / I8Vec::kUnitPx, len, scales + n0,
                         qscales[q], metric, mn, mx, nan);
#else
    finalize_row_i8_scalar(sim + q * N + n0, len, scales + n0, qscales[q], metric,
                           mn, mx, nan);
#endif
  };
  run_tiles(plan, N, Q, accumulate, finalize, minmax);
}

}  // namespace

void similarity_int8(const at::Tensor& features, const at::Tensor& queries,
                     const at::Tensor& scales, const at::Tensor& query_scales,
                     int64_t metric, const at::Tensor& sim_out,
                     const at::Tensor& minmax_out) {
  const int64_t C = features.size(0);
  const int64_t N = features.size(1);
  const int64_t Q = queries.size(0);
  const int8_t* q = queries.const_data_ptr<int8_t>();
  // Queries as (ceil(C/2), Q) packed channel pairs (see pack_pair).
  const int64_t npair = (C + 1) / 2;
  std::vector<int32_t> qp(static_cast<size_t>(npair * Q));
  for (int64_t j = 0; j < Q; ++j)
    for (int64_t k = 0; k < npair; ++k) {
      const int8_t lo = q[j * C + 2 * k];
      const int8_t hi = (2 * k + 1 < C) ? q[j * C + 2 * k + 1] : int8_t{0};
      qp[k * Q + j] = pack_pair(lo, hi);
    }
  similarity_i8_impl(features.const_data_ptr<int8_t>(), qp.data(),
                     scales.const_data_ptr<float>(), query_scales.const_data_ptr<float>(),
                     C, N, Q, metric, sim_out.mutable_data_ptr<float>(),
                     minmax_out.mutable_data_ptr<float>());
}

}  // namespace cpu
}  // namespace featvis
