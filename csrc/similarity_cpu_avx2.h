// featvis-fast: AVX2 building blocks shared by the CPU similarity kernels
// (similarity_cpu_float.cpp, similarity_cpu_int8.cpp): register-blocking sizes,
// the query-chunk dispatcher and the vectorized metric transform + min/max.
// Empty unless the build targets AVX2+FMA+F16C (see similarity_cpu.h).
#pragma once

#include "similarity_cpu.h"

#if FV_HAVE_AVX2
#include <limits>

namespace featvis {
namespace cpu {

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

}  // namespace cpu
}  // namespace featvis
#endif  // FV_HAVE_AVX2
