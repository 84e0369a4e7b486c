// featvis-fast: colorize, the CPU LUT colorization of similarity maps:
//   colorize(sim (Q,N) f32, lo (Q,) f32, hi (Q,) f32, lut (256,4) u8,
//            rgba_out (Q,N,4) u8)

#include "similarity_cpu.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace featvis {
namespace cpu {
namespace {

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

}  // namespace

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
