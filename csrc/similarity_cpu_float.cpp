// featvis-fast: the float-storage (fp32/fp16/bf16) similarity kernel: inputs
// widened exactly to fp32, fp32 FMA accumulation in register blocks (AVX2) or
// the portable scalar path, then the metric transform + min/max of each row.
// The design is described in similarity_cpu.h.

#include "similarity_cpu.h"
#include "similarity_cpu_avx2.h"

#include <algorithm>
#include <vector>

namespace featvis {
namespace cpu {
namespace {

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

// Final per-element transform + min/max of one output row.
void finalize_row_scalar(float* __restrict o, int64_t n, int64_t metric,
                         float& mn, float& mx, bool& nan) {
  for (int64_t p = 0; p < n; ++p) {
    const float v = apply_metric_s(o[p], metric);
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
#endif  // FV_HAVE_AVX2

// ----------------------------------------------------------------------------
// Driver.

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

}  // namespace

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

template void similarity_typed<float>(const at::Tensor&, const at::Tensor&, int64_t,
                                      const at::Tensor&, const at::Tensor&);
template void similarity_typed<c10::Half>(const at::Tensor&, const at::Tensor&, int64_t,
                                          const at::Tensor&, const at::Tensor&);
template void similarity_typed<c10::BFloat16>(const at::Tensor&, const at::Tensor&, int64_t,
                                              const at::Tensor&, const at::Tensor&);

}  // namespace cpu
}  // namespace featvis
