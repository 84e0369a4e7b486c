// featvis-fast: CPU kernels for per-pixel feature similarity + LUT colorization.
//
//   pixel_similarity(features (C,N), queries (Q,C), metric, scales (N,) f32 | None,
//                    query_scales (Q,) f32 | None, sim_out (Q,N) f32,
//                    minmax_out (Q,2) f32)
//   colorize(sim (Q,N) f32, lo (Q,) f32, hi (Q,) f32, lut (256,4) u8,
//            rgba_out (Q,N,4) u8)
//
// The similarity kernel is memory-bound: the (C,N) feature map is streamed
// from DRAM exactly once per call, for any Q.  Work is split over pixel tiles
// (about N/threads pixels, capped at 8192 and at 64K/Q so the accumulators
// stay in L2) with at::parallel_for.  Inside a tile the channels are processed
// in blocks of 8-16 rows (= 8-16 long sequential row streams, plus a software
// prefetch ahead on each row); for each channel block every chunk of NQ
// queries (up to 8; fewer for 16-bit inputs / AVX2-only register files, see
// qchunk_for) sweeps the tile in register blocks of RV vectors of pixels x NQ
// queries whose accumulators live in registers and are spilled to sim_out
// (which doubles as the accumulator buffer) once per channel block.
// Query chunks after the first re-read the channel block from L2.
// min/max: per-(tile, query) partials computed from the stored values,
// reduced serially after the parallel loop (exact and deterministic; NaN
// propagates like torch.aminmax).
//
// Float storage (fp32/fp16/bf16): accumulation is fp32 with FMA; fp16/bf16
// inputs are widened exactly (F16C / 16-bit shift).
//
// int8 storage (INNER/ANGULAR only): codes in [-127,127] with per-pixel scales
// (N,) and per-query scales (Q,).  acc = sum_c f[c,n]*q[c] is exact in int32
// (C <= 131071), accumulated in sim_out's memory as int32, and the finalize
// pass turns it into x = ((float)acc * scales[n]) * query_scales[q] (two
// separately rounded fp32 multiplies) before the metric transform.  The vector
// path interleaves two channel rows bytewise, sign-extends to int16 pairs and
// uses madd_epi16 with the query's (q[c], q[c+1]) pair: one multiply-add per
// pixel per two channels, 16 pixels per instruction with AVX-512BW.
//
// An AVX2+FMA+F16C intrinsics path is used when the compiler targets it
// (-march=native on any x86-64 machine from Haswell on; the int8 kernel uses
// 512-bit vectors when AVX-512BW is available too); a portable scalar path is
// always compiled and handles pixel tails and non-AVX2 builds.

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define FV_HAVE_AVX2 1
#else
#define FV_HAVE_AVX2 0
#endif
#if FV_HAVE_AVX2 && defined(__AVX512BW__)
#define FV_HAVE_AVX512BW 1
#else
#define FV_HAVE_AVX512BW 0
#endif

namespace featvis {
namespace cpu {
namespace {

enum Metric : int64_t { kInner = 0, kAngular = 1, kEuclidean = 2 };

// ----------------------------------------------------------------------------
// Tuning constants (measured on a 2-core AVX-512 Xeon VM; C=1024, N=128*128,
// Q=1 fp16: 1.4 ms vs 3.0 ms for torch's fp32 q @ F; both ~22-24 GB/s).
//
// Pixels per task: ceil(N / threads) rounded up to 64, capped so that the
// Q x tile fp32 accumulators (which live in sim_out) stay L2-resident.
constexpr int64_t kMaxTile = 8192;
constexpr int64_t kMinTileCap = 512;
constexpr int64_t kAccBudgetFloats = 64 * 1024;  // 256 KiB of accumulators
// Channel rows per block = number of concurrent sequential row streams; the
// accumulators are re-loaded from sim_out once per block.  (Even: the int8
// kernel consumes channels in pairs.)
constexpr int64_t kCBlockFewQ = 8;    // Q <= 2: bandwidth-bound
constexpr int64_t kCBlockManyQ = 16;  // Q > 2: amortize accumulator reloads
// Software prefetch distance along a feature row (1 KiB fp32, 512 B fp16;
// int8: 256 B, measured 128 ~ 256 < 512 < 1024 B, single thread C=1024 Q=1/8).
constexpr int64_t kPrefetchElems = 256;
constexpr int64_t kPrefetchBytesI8 = 256;
constexpr int kQChunk = 8;  // max queries per register chunk
// int8: |f*q| <= 2^14, so the exact sum fits int32 for up to 2^17 - 1 channels.
constexpr int64_t kMaxChannelsI8 = (int64_t{1} << 17) - 1;

constexpr float kTwoOverPi = 0.636619772367581343f;
constexpr float kHalfPi = 1.57079632679489662f;

// ----------------------------------------------------------------------------
// Scalar helpers (portable path + tails).

inline float to_f32(float x) { return x; }
inline float to_f32(c10::Half h) {
#if FV_HAVE_AVX2
  return _cvtsh_ss(h.x);
#else
  return c10::detail::fp16_ieee_to_fp32_value(h.x);
#endif
}
inline float to_f32(c10::BFloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline float fmadd_s(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);  // single instruction; matches the vector path
#else
  return a * b + c;
#endif
}

// acos(x) for x in [0,1] (Cephes asinf polynomial, ~1e-7 rel. error).
inline float angular_from_inner_s(float x) {
  // s = 1 - acos(clamp(x,0,1)) * 2/pi ; NaN -> 0 like the vector path's max.
  x = (x > 0.f) ? x : 0.f;
  x = (x < 1.f) ? x : 1.f;
  const bool big = x > 0.5f;
  const float z = big ? 0.5f * (1.f - x) : x * x;
  const float s = big ? std::sqrt(z) : x;
  float p = 4.2163199048e-2f;
  p = fmadd_s(p, z, 2.4181311049e-2f);
  p = fmadd_s(p, z, 4.5470025998e-2f);
  p = fmadd_s(p, z, 7.4953002686e-2f);
  p = fmadd_s(p, z, 1.6666752422e-1f);
  const float r = fmadd_s(s * z, p, s);  // asin(s)
  const float a = big ? 2.f * r : kHalfPi - r;  // acos(x)
  const float v = fmadd_s(-a, kTwoOverPi, 1.f);
  // clamp to [0,1]; x == 0 (orthogonal or zero vectors) is exactly 0 whatever the rounding
  return x > 0.f ? (v > 0.f ? (v < 1.f ? v : 1.f) : 0.f) : 0.f;
}

// Portable accumulation of a block of `npix` pixels x nq queries
// over channels [c0, c1).  out[j*ldo + p] holds the running fp32 sums
// (initialized to 0 when init).  Channel loop outermost so every feature row
// segment is read once and the inner loops vectorize.
template <typename T>
void accumulate_scalar(const T* __restrict f, int64_t ldf, int64_t npix,
                       int64_t c0, int64_t c1, const float* __restrict qT,
                       int64_t ldq, int nq, float* __restrict out, int64_t ldo,
                       bool init, bool euclid) {
  constexpr int64_t kChunk = 256;
  float row[kChunk];
  for (int64_t p0 = 0; p0 < npix; p0 += kChunk) {
    const int64_t np = std::min(kChunk, npix - p0);
    if (init) {
      for (int j = 0; j < nq; ++j)
        std::fill(out + j * ldo + p0, out + j * ldo + p0 + np, 0.f);
    }
    for (int64_t c = c0; c < c1; ++c) {
      const T* fr = f + c * ldf + p0;
      for (int64_t p = 0; p < np; ++p) row[p] = to_f32(fr[p]);
      const float* qc = qT + c * ldq;
      for (int j = 0; j < nq; ++j) {
        const float qv = qc[j];
        float* o = out + j * ldo + p0;
        if (euclid) {
          for (int64_t p = 0; p < np; ++p) {
            const float d = row[p] - qv;
            o[p] = fmadd_s(d, d, o[p]);
          }
        } else {
          for (int64_t p = 0; p < np; ++p) o[p] = fmadd_s(row[p], qv, o[p]);
        }
      }
    }
  }
}

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

// Per-element metric transform and NaN-propagating min/max.
inline float apply_metric_s(float v, int64_t metric) {
  if (metric == kAngular) return angular_from_inner_s(v);
  if (metric == kEuclidean) return std::sqrt(v);
  return v;
}
inline void minmax_s(float v, float& mn, float& mx, bool& nan) {
  if (std::isnan(v)) nan = true;
  mn = (v < mn) ? v : mn;
  mx = (v > mx) ? v : mx;
}

// Final per-element transform + min/max of one output row.
void finalize_row_scalar(float* __restrict o, int64_t n, int64_t metric,
                         float& mn, float& mx, bool& nan) {
  for (int64_t p = 0; p < n; ++p) {
    const float v = apply_metric_s(o[p], metric);
    o[p] = v;
    minmax_s(v, mn, mx, nan);
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
// ----------------------------------------------------------------------------
// AVX2 path.

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load8(const c10::BFloat16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

#if defined(__AVX512VL__)
constexpr int kVecRegs = 32;  // ymm0-31 usable with AVX-512VL
#else
constexpr int kVecRegs = 16;
#endif
// Register blocking.  A block is NQ queries x RV vectors of pixels; its
// NQ*RV accumulators + RV feature vectors + ~2 temporaries must fit in the
// vector registers.  RV is also kept >= one full 64-byte cache line of the
// feature row (line_vecs vectors): rows of a channel block are N elements
// apart, and for power-of-two N they all map to the same L1 set, so a line
// only partially consumed by one block would be evicted before the next block
// needs it.
constexpr bool regs_fit(int nq, int rv, int nregs) { return nq * rv + rv + 2 <= nregs; }
constexpr int rv_for_lines(int nq, int line_vecs, int nregs) {
  return nq == 1 ? 8  // (single accumulator row: feature vectors are not live together)
         : regs_fit(nq, 8, nregs) ? 8
         : (line_vecs <= 4 && regs_fit(nq, 4, nregs)) ? 4
         : (line_vecs <= 2 && regs_fit(nq, 2, nregs)) ? 2
                                                      : line_vecs;
}
// Queries per chunk: the most that fit with full-line blocks (max 8).
constexpr int qchunk_lines(int line_vecs, int nregs) {
  int n = kQChunk;
  while (n > 1 && !regs_fit(n, line_vecs, nregs)) --n;
  return n;
}
// Float kernel (8 fp32 lanes per vector):
// AVX-512VL (32 regs): fp32 8, fp16/bf16 6.  AVX2 (16 regs): fp32 5, 16-bit 2.
template <typename T>
constexpr int line_vecs() { return static_cast<int>(64 / (8 * sizeof(T))); }
template <typename T>
constexpr int rv_for(int nq) { return rv_for_lines(nq, line_vecs<T>(), kVecRegs); }
template <typename T>
constexpr int qchunk_for() { return qchunk_lines(line_vecs<T>(), kVecRegs); }

// One register block: NQ queries x RV*8 pixels over channels [c0, c1).
template <int NQ, int RV, bool EUCLID, bool PF, typename T>
__attribute__((always_inline)) inline void block_avx2(const T* __restrict f, int64_t ldf, int64_t c0,
                       int64_t c1, const float* __restrict qT,
                       int64_t ldq, float* __restrict out, int64_t ldo,
                       bool init) {
  __m256 acc[NQ][RV];
  if (init) {
#pragma GCC unroll 64
    for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
      for (int r = 0; r < RV; ++r) acc[j][r] = _mm256_setzero_ps();
  } else {
#pragma GCC unroll 64
    for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
      for (int r = 0; r < RV; ++r) acc[j][r] = _mm256_loadu_ps(out + j * ldo + 8 * r);
  }
  constexpr int kLineElems = 64 / sizeof(T);
  constexpr int kBlockElems = RV * 8;
  for (int64_t c = c0; c < c1; ++c) {
    const T* fr = f + c * ldf;
    if (PF) {  // first pass over these rows: prefetch further along the row
      // (integer arithmetic: the address may lie past the end of the tensor;
      // prefetches never fault)
      const char* pf = reinterpret_cast<const char*>(
          reinterpret_cast<uintptr_t>(fr) + kPrefetchElems * sizeof(T));
#pragma GCC unroll 8
      for (int e = 0; e < kBlockElems; e += kLineElems)
        _mm_prefetch(pf + e * sizeof(T), _MM_HINT_T0);
    }
    __m256 fv[RV];
#pragma GCC unroll 8
    for (int r = 0; r < RV; ++r) fv[r] = load8(fr + 8 * r);
    const float* qc = qT + c * ldq;
#pragma GCC unroll 64
    for (int j = 0; j < NQ; ++j) {
      const __m256 qb = _mm256_broadcast_ss(qc + j);
#pragma GCC unroll 8
      for (int r = 0; r < RV; ++r) {
        if (EUCLID) {
          const __m256 d = _mm256_sub_ps(fv[r], qb);
          acc[j][r] = _mm256_fmadd_ps(d, d, acc[j][r]);
        } else {
          acc[j][r] = _mm256_fmadd_ps(fv[r], qb, acc[j][r]);
        }
      }
    }
  }
#pragma GCC unroll 64
  for (int j = 0; j < NQ; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < RV; ++r) _mm256_storeu_ps(out + j * ldo + 8 * r, acc[j][r]);
}

// Sweep nvec full vectors of the tile for NQ queries, channels [c0,c1).
template <int NQ, bool EUCLID, bool PF, typename T>
void sweep_avx2(const T* f, int64_t ldf, int64_t nvec, int64_t c0, int64_t c1,
                const float* qT, int64_t ldq, float* out,
                int64_t ldo, bool init) {
  constexpr int RV = rv_for<T>(NQ);
  int64_t v = 0;
  for (; v + RV <= nvec; v += RV)
    block_avx2<NQ, RV, EUCLID, PF>(f + 8 * v, ldf, c0, c1, qT, ldq,
                                   out + 8 * v, ldo, init);
  for (; v < nvec; ++v)
    block_avx2<NQ, 1, EUCLID, PF>(f + 8 * v, ldf, c0, c1, qT, ldq,
                                  out + 8 * v, ldo, init);
}

// Calls Sweep::run<K>(args...) for the runtime query-chunk size nq in [1, QMAX].
template <typename Sweep, int QMAX, int K = 1, typename... Args>
inline void dispatch_nq(int nq, const Args&... args) {
  if constexpr (K <= QMAX) {
    if (nq == K) return Sweep::template run<K>(args...);
    dispatch_nq<Sweep, QMAX, K + 1>(nq, args...);
  } else {
    TORCH_INTERNAL_ASSERT(false, "bad query chunk size ", nq);
  }
}

template <bool EUCLID, bool PF, typename T>
struct FloatSweep {
  template <int K>
  static void run(const T* f, int64_t ldf, int64_t nvec, int64_t c0, int64_t c1,
                  const float* qT, int64_t ldq, float* out, int64_t ldo, bool init) {
    sweep_avx2<K, EUCLID, PF>(f, ldf, nvec, c0, c1, qT, ldq, out, ldo, init);
  }
};

template <bool EUCLID, bool PF, typename T>
void sweep_dispatch(int nq, const T* f, int64_t ldf, int64_t nvec, int64_t c0,
                    int64_t c1, const float* qT, int64_t ldq,
                    float* out, int64_t ldo, bool init) {
  dispatch_nq<FloatSweep<EUCLID, PF, T>, qchunk_for<T>()>(nq, f, ldf, nvec, c0, c1, qT, ldq,
                                                         out, ldo, init);
}

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
    if (PF) {  // see block_avx2
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

// ---- finalize (transform + min/max) ------------------------------------------
inline __m256 angular_from_inner_v(__m256 x) {
  // clamp to [0,1]; max_ps(x, 0) returns 0 for NaN x.
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.f));
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 big = _mm256_cmp_ps(x, half, _CMP_GT_OQ);
  const __m256 zb = _mm256_mul_ps(half, _mm256_sub_ps(_mm256_set1_ps(1.f), x));
  const __m256 z = _mm256_blendv_ps(_mm256_mul_ps(x, x), zb, big);
  const __m256 s = _mm256_blendv_ps(x, _mm256_sqrt_ps(zb), big);
  __m256 p = _mm256_set1_ps(4.2163199048e-2f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.4181311049e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(4.5470025998e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(7.4953002686e-2f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.6666752422e-1f));
  const __m256 r = _mm256_fmadd_ps(_mm256_mul_ps(s, z), p, s);
  const __m256 a = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(kHalfPi), r),
                                    _mm256_add_ps(r, r), big);
  __m256 v = _mm256_fnmadd_ps(a, _mm256_set1_ps(kTwoOverPi), _mm256_set1_ps(1.f));
  // clamp to [0,1]; x == 0 (orthogonal or zero vectors) is exactly 0 whatever the rounding
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.f));
  return _mm256_and_ps(v, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ));
}

inline __m256 apply_metric_v(__m256 v, int64_t metric) {
  if (metric == kAngular) return angular_from_inner_v(v);
  if (metric == kEuclidean) return _mm256_sqrt_ps(v);
  return v;
}

inline float hmin8(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Running NaN-propagating min/max over vectors.
struct MinMaxV {
  __m256 mn = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 nan = _mm256_setzero_ps();
  void add(__m256 v) {
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
  }
  void merge_into(float& smn, float& smx, bool& snan) const {
    if (_mm256_movemask_ps(nan)) snan = true;
    const float a = hmin8(mn), b = hmax8(mx);
    smn = (a < smn) ? a : smn;
    smx = (b > smx) ? b : smx;
  }
};

void finalize_row_avx2(float* __restrict o, int64_t n, int64_t metric,
                       float& mn, float& mx, bool& nan) {
  MinMaxV mm;
  int64_t p = 0;
  for (; p + 8 <= n; p += 8) {
    __m256 v = _mm256_loadu_ps(o + p);
    if (metric != kInner) {
      v = apply_metric_v(v, metric);
      _mm256_storeu_ps(o + p, v);
    }
    mm.add(v);
  }
  mm.merge_into(mn, mx, nan);
  if (p < n) finalize_row_scalar(o + p, n - p, metric, mn, mx, nan);
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

// ----------------------------------------------------------------------------
// Driver.

struct TilePlan {
  int64_t tile, ntiles, cblock, grain;
};

TilePlan plan_tiles(int64_t C, int64_t N, int64_t Q) {
  TilePlan p;
  const int64_t nthreads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tile_cap =
      std::min(kMaxTile, std::max(kMinTileCap, (kAccBudgetFloats / Q) / 64 * 64));
  p.tile = std::min(tile_cap, ((N + nthreads - 1) / nthreads + 63) / 64 * 64);
  p.ntiles = (N + p.tile - 1) / p.tile;
  p.cblock = Q <= 2 ? kCBlockFewQ : kCBlockManyQ;
  // Small problems are not worth waking the thread pool.
  const int64_t work = C * N * Q;
  p.grain = work < (int64_t{1} << 18) ? p.ntiles : 1;
  return p;
}

// Runs accumulate(n0, len) for every tile in parallel, then
// finalize(q, n0, len, mn, mx, nan) for each of its Q rows, and writes the
// per-query [min, max] to minmax.  Per-(tile, query) partials are reduced
// serially afterwards so the result is deterministic and exactly the min/max
// of what was stored.
template <typename Accumulate, typename Finalize>
void run_tiles(const TilePlan& plan, int64_t N, int64_t Q, const Accumulate& accumulate,
               const Finalize& finalize, float* minmax) {
  const int64_t ntiles = plan.ntiles;
  std::vector<float> part(static_cast<size_t>(ntiles * Q * 2));
  std::vector<uint8_t> part_nan(static_cast<size_t>(ntiles * Q), 0);

  at::parallel_for(0, ntiles, plan.grain, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t n0 = t * plan.tile;
      const int64_t len = std::min(plan.tile, N - n0);
      accumulate(n0, len);
      for (int64_t q = 0; q < Q; ++q) {
        float mn = std::numeric_limits<float>::infinity();
        float mx = -std::numeric_limits<float>::infinity();
        bool nan = false;
        finalize(q, n0, len, mn, mx, nan);
        part[(t * Q + q) * 2 + 0] = mn;
        part[(t * Q + q) * 2 + 1] = mx;
        part_nan[t * Q + q] = nan ? 1 : 0;
      }
    }
  });

  const float qnan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t q = 0; q < Q; ++q) {
    float mn = std::numeric_limits<float>::infinity();
    float mx = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (int64_t t = 0; t < ntiles; ++t) {
      const float a = part[(t * Q + q) * 2 + 0];
      const float b = part[(t * Q + q) * 2 + 1];
      mn = (a < mn) ? a : mn;
      mx = (b > mx) ? b : mx;
      nan = nan || part_nan[t * Q + q];
    }
    minmax[q * 2 + 0] = nan ? qnan : mn;
    minmax[q * 2 + 1] = nan ? qnan : mx;
  }
}

// Float storage: qT is (C, Q) fp32.
template <typename T>
void similarity_impl(const T* f, const float* qT, int64_t C, int64_t N,
                     int64_t Q, int64_t metric, float* sim, float* minmax) {
  const bool euclid = metric == kEuclidean;
  const TilePlan plan = plan_tiles(C, N, Q);
  const int64_t cblock = plan.cblock;
  auto accumulate = [&](int64_t n0, int64_t len) {
    const T* ft = f + n0;
#if FV_HAVE_AVX2
    constexpr int64_t qchunk = qchunk_for<T>();
    const int64_t nvec = len / 8;
    const int64_t ntail = len - nvec * 8;
    // Channel blocks outermost: a block's rows come from DRAM once and are
    // re-read from L2 by the remaining query chunks (Q > qchunk).
    if (nvec > 0) {
      for (int64_t c0 = 0; c0 < C; c0 += cblock) {
        const int64_t c1 = std::min(C, c0 + cblock);
        const bool init = c0 == 0;
        for (int64_t q0 = 0; q0 < Q; q0 += qchunk) {
          const int nq = static_cast<int>(std::min<int64_t>(qchunk, Q - q0));
          float* out = sim + q0 * N + n0;
          const bool pf = q0 == 0;
          if (euclid) {
            if (pf) sweep_dispatch<true, true>(nq, ft, N, nvec, c0, c1, qT + q0, Q, out, N, init);
            else    sweep_dispatch<true, false>(nq, ft, N, nvec, c0, c1, qT + q0, Q, out, N, init);
          } else {
            if (pf) sweep_dispatch<false, true>(nq, ft, N, nvec, c0, c1, qT + q0, Q, out, N, init);
            else    sweep_dispatch<false, false>(nq, ft, N, nvec, c0, c1, qT + q0, Q, out, N, init);
          }
        }
      }
    }
    if (ntail > 0) {  // < 8 trailing pixels of the last tile
      for (int64_t q0 = 0; q0 < Q; q0 += kQChunk) {
        const int nq = static_cast<int>(std::min<int64_t>(kQChunk, Q - q0));
        accumulate_scalar(ft + nvec * 8, N, ntail, 0, C, qT + q0, Q, nq,
                          sim + q0 * N + n0 + nvec * 8, N, /*init=*/true, euclid);
      }
    }
#else
    for (int64_t c0 = 0; c0 < C; c0 += cblock) {
      const int64_t c1 = std::min(C, c0 + cblock);
      for (int64_t q0 = 0; q0 < Q; q0 += kQChunk) {
        const int nq = static_cast<int>(std::min<int64_t>(kQChunk, Q - q0));
        accumulate_scalar(ft, N, len, c0, c1, qT + q0, Q, nq, sim + q0 * N + n0,
                          N, /*init=*/c0 == 0, euclid);
      }
    }
#endif
  };
  // Transform (angular / sqrt) and min/max of the finished tile rows.
  auto finalize = [&](int64_t q, int64_t n0, int64_t len, float& mn, float& mx, bool& nan) {
#if FV_HAVE_AVX2
    finalize_row_avx2(sim + q * N + n0, len, metric, mn, mx, nan);
#else
    finalize_row_scalar(sim + q * N + n0, len, metric, mn, mx, nan);
#endif
  };
  run_tiles(plan, N, Q, accumulate, finalize, minmax);
}

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

template <typename T>
void similarity_typed(const at::Tensor& features, const at::Tensor& queries,
                      int64_t metric, const at::Tensor& sim_out,
                      const at::Tensor& minmax_out) {
  const int64_t C = features.size(0);
  const int64_t N = features.size(1);
  const int64_t Q = queries.size(0);
  const T* f = reinterpret_cast<const T*>(features.const_data_ptr());
  const T* q = reinterpret_cast<const T*>(queries.const_data_ptr());
  // Queries converted exactly to fp32 and transposed to (C, Q) so the kernel
  // broadcasts q[c, j..j+7] from one cache line.
  std::vector<float> qT(static_cast<size_t>(C * Q));
  for (int64_t j = 0; j < Q; ++j)
    for (int64_t c = 0; c < C; ++c) qT[c * Q + j] = to_f32(q[j * C + c]);
  similarity_impl<T>(f, qT.data(), C, N, Q, metric,
                     sim_out.mutable_data_ptr<float>(),
                     minmax_out.mutable_data_ptr<float>());
}

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

// ----------------------------------------------------------------------------
// Colorize.  Exact rule shared by all backends:
//   scale = hi > lo ? 255/(hi-lo) : 0;  t = (s - lo)*scale + 0.5
//   t = clamp(t, 0, 255) with NaN -> 0;  idx = (int)t;  rgba = lut[idx]
// The multiply and add must stay separately rounded (no FMA contraction).
#if defined(__GNUC__) && !defined(__clang__)
#define FV_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define FV_NO_CONTRACT
#endif

FV_NO_CONTRACT
void colorize_row(const float* __restrict s, int64_t n, float lo, float scale,
                  const uint32_t* __restrict lut, uint8_t* __restrict out) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  int64_t p = 0;
#if FV_HAVE_AVX2
  const __m256 vlo = _mm256_set1_ps(lo);
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256 vhalf = _mm256_set1_ps(0.5f);
  const __m256 vzero = _mm256_setzero_ps();
  const __m256 vmax = _mm256_set1_ps(255.f);
  for (; p + 8 <= n; p += 8) {
    __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(s + p), vlo), vscale);
    t = _mm256_add_ps(t, vhalf);
    t = _mm256_max_ps(t, vzero);  // NaN -> 0 (second operand returned)
    t = _mm256_min_ps(t, vmax);
    const __m256i idx = _mm256_cvttps_epi32(t);
    const __m256i px = _mm256_i32gather_epi32(reinterpret_cast<const int*>(lut), idx, 4);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4 * p), px);
  }
#endif
  for (; p < n; ++p) {
    float t = (s[p] - lo) * scale;
    t = t + 0.5f;
    t = (t >= 0.f) ? t : 0.f;  // also NaN -> 0
    t = (t <= 255.f) ? t : 255.f;
    std::memcpy(out + 4 * p, &lut[static_cast<int>(t)], 4);  // one uint32
  }
}

void check_cpu_contig(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), name, " must be a defined tensor");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got device ",
              t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// A (len,) float32 contiguous CPU tensor.
void check_scale_vector(const at::Tensor& t, const char* name, int64_t len,
                        const char* len_name) {
  check_cpu_contig(t, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len, name, " must have shape (", len_name,
              ",) = (", len, ",), got ", t.sizes());
}

}  // namespace

void pixel_similarity(const at::Tensor& features, const at::Tensor& queries,
                      int64_t metric, const std::optional<at::Tensor>& scales,
                      const std::optional<at::Tensor>& query_scales,
                      const at::Tensor& sim_out, const at::Tensor& minmax_out) {
  check_cpu_contig(features, "features");
  check_cpu_contig(queries, "queries");
  check_cpu_contig(sim_out, "sim_out");
  check_cpu_contig(minmax_out, "minmax_out");
  TORCH_CHECK(features.dim() == 2, "features must be 2-D (C, N), got ",
              features.dim(), "-D tensor of shape ", features.sizes());
  TORCH_CHECK(queries.dim() == 2, "queries must be 2-D (Q, C), got ",
              queries.dim(), "-D tensor of shape ", queries.sizes());
  TORCH_CHECK(sim_out.dim() == 2, "sim_out must be 2-D (Q, N), got shape ",
              sim_out.sizes());
  TORCH_CHECK(minmax_out.dim() == 2, "minmax_out must be 2-D (Q, 2), got shape ",
              minmax_out.sizes());
  const auto st = features.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kChar,
              "features dtype must be float32, float16, bfloat16 or int8, got ", st);
  TORCH_CHECK(queries.scalar_type() == st,
              "queries dtype (", queries.scalar_type(),
              ") must match features dtype (", st, ")");
  TORCH_CHECK(sim_out.scalar_type() == at::kFloat,
              "sim_out must be float32, got ", sim_out.scalar_type());
  TORCH_CHECK(minmax_out.scalar_type() == at::kFloat,
              "minmax_out must be float32, got ", minmax_out.scalar_type());
  TORCH_CHECK(metric == kInner || metric == kAngular || metric == kEuclidean,
              "metric must be 0 (inner), 1 (angular) or 2 (euclidean), got ",
              metric);
  const int64_t C = features.size(0);
  const int64_t N = features.size(1);
  const int64_t Q = queries.size(0);
  TORCH_CHECK(C >= 1, "features must have at least one channel (C >= 1), got C=", C);
  TORCH_CHECK(N >= 1, "features must have at least one pixel (N >= 1), got N=", N);
  TORCH_CHECK(Q >= 1, "queries must contain at least one query (Q >= 1), got Q=", Q);
  TORCH_CHECK(queries.size(1) == C, "queries has ", queries.size(1),
              " channels but features has C=", C);
  TORCH_CHECK(sim_out.size(0) == Q && sim_out.size(1) == N,
              "sim_out must have shape (Q, N) = (", Q, ", ", N, "), got ",
              sim_out.sizes());
  TORCH_CHECK(minmax_out.size(0) == Q && minmax_out.size(1) == 2,
              "minmax_out must have shape (Q, 2) = (", Q, ", 2), got ",
              minmax_out.sizes());
  const bool has_scales = scales.has_value() && scales->defined();
  const bool has_qscales = query_scales.has_value() && query_scales->defined();
  if (st == at::kChar) {
    TORCH_CHECK(metric != kEuclidean, "euclidean is not supported with int8 storage");
    TORCH_CHECK(has_scales && has_qscales,
                "int8 storage needs scales (N,) and query_scales (Q,) float32 tensors");
    check_scale_vector(*scales, "scales", N, "N");
    check_scale_vector(*query_scales, "query_scales", Q, "Q");
    TORCH_CHECK(C <= kMaxChannelsI8, "int8 storage supports at most ", kMaxChannelsI8,
                " channels (exact int32 accumulation), got C=", C);
  } else {
    TORCH_CHECK(!has_scales && !has_qscales,
                "scales and query_scales are only used with int8 storage; pass None for ",
                st, " features");
  }

  at::assert_no_overlap(sim_out, features);
  at::assert_no_overlap(sim_out, queries);
  at::assert_no_overlap(minmax_out, features);
  at::assert_no_overlap(minmax_out, queries);
  at::assert_no_overlap(minmax_out, sim_out);
  if (st == at::kChar) {
    for (const at::Tensor* s : {&*scales, &*query_scales}) {
      at::assert_no_overlap(sim_out, *s);
      at::assert_no_overlap(minmax_out, *s);
    }
  }

  switch (st) {
    case at::kFloat:
      similarity_typed<float>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kHalf:
      similarity_typed<c10::Half>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kBFloat16:
      similarity_typed<c10::BFloat16>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kChar:
      similarity_int8(features, queries, *scales, *query_scales, metric, sim_out,
                      minmax_out);
      break;
    default:
      TORCH_CHECK(false, "unsupported dtype ", st);
  }
}

void colorize(const at::Tensor& sim, const at::Tensor& lo, const at::Tensor& hi,
              const at::Tensor& lut, const at::Tensor& rgba_out) {
  check_cpu_contig(sim, "sim");
  check_cpu_contig(lo, "lo");
  check_cpu_contig(hi, "hi");
  check_cpu_contig(lut, "lut");
  check_cpu_contig(rgba_out, "rgba_out");
  TORCH_CHECK(sim.dim() == 2, "sim must be 2-D (Q, N), got shape ", sim.sizes());
  TORCH_CHECK(sim.scalar_type() == at::kFloat, "sim must be float32, got ",
              sim.scalar_type());
  const int64_t Q = sim.size(0);
  const int64_t N = sim.size(1);
  TORCH_CHECK(lo.dim() == 1 && lo.size(0) == Q, "lo must have shape (Q,) = (",
              Q, ",), got ", lo.sizes());
  TORCH_CHECK(hi.dim() == 1 && hi.size(0) == Q, "hi must have shape (Q,) = (",
              Q, ",), got ", hi.sizes());
  TORCH_CHECK(lo.scalar_type() == at::kFloat, "lo must be float32, got ",
              lo.scalar_type());
  TORCH_CHECK(hi.scalar_type() == at::kFloat, "hi must be float32, got ",
              hi.scalar_type());
  TORCH_CHECK(lut.dim() == 2 && lut.size(0) == 256 && lut.size(1) == 4,
              "lut must have shape (256, 4), got ", lut.sizes());
  TORCH_CHECK(lut.scalar_type() == at::kByte, "lut must be uint8, got ",
              lut.scalar_type());
  TORCH_CHECK(rgba_out.dim() == 3 && rgba_out.size(0) == Q &&
                  rgba_out.size(1) == N && rgba_out.size(2) == 4,
              "rgba_out must have shape (Q, N, 4) = (", Q, ", ", N, ", 4), got ",
              rgba_out.sizes());
  TORCH_CHECK(rgba_out.scalar_type() == at::kByte, "rgba_out must be uint8, got ",
              rgba_out.scalar_type());
  at::assert_no_overlap(rgba_out, sim);
  at::assert_no_overlap(rgba_out, lut);
  if (Q == 0 || N == 0) return;

  const float* s = sim.const_data_ptr<float>();
  const float* plo = lo.const_data_ptr<float>();
  const float* phi = hi.const_data_ptr<float>();
  // LUT rows as uint32 (memcpy: no alignment assumption on the uint8 tensor).
  uint32_t lut32[256];
  std::memcpy(lut32, lut.const_data_ptr<uint8_t>(), sizeof(lut32));
  std::vector<float> scale(static_cast<size_t>(Q));
  for (int64_t q = 0; q < Q; ++q) {
    const float l = plo[q], h = phi[q];
    scale[q] = (h > l) ? 255.f / (h - l) : 0.f;
  }
  uint8_t* out_bytes = rgba_out.mutable_data_ptr<uint8_t>();
  const int64_t total = Q * N;
  at::parallel_for(0, total, 32768, [&](int64_t b, int64_t e) {
    int64_t i = b;
    while (i < e) {
      const int64_t q = i / N;
      const int64_t row_end = std::min(e, (q + 1) * N);
      colorize_row(s + i, row_end - i, plo[q], scale[q], lut32, out_bytes + 4 * i);
      i = row_end;
    }
  });
}

}  // namespace cpu
}  // namespace featvis
