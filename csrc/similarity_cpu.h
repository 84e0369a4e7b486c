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
//
// Files: similarity_cpu.h (this: declarations, tuning constants, scalar helpers
// shared by the CPU files), similarity_cpu_avx2.h (vector building blocks shared
// by the two kernels), similarity_cpu.cpp (pixel_similarity: argument checks,
// dtype dispatch, pixel tiles + min/max), similarity_cpu_float.cpp (fp32/fp16/
// bf16 kernel), similarity_cpu_int8.cpp (int8 kernel), colorize_cpu.cpp
// (colorize) and bindings_cpu.cpp (Python bindings).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/FunctionRef.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>

#include "featvis_abi.h"

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

// ---- Entry points (bound in bindings_cpu.cpp) --------------------------------
void pixel_similarity(const at::Tensor& features, const at::Tensor& queries,
                      int64_t metric, const std::optional<at::Tensor>& scales,
                      const std::optional<at::Tensor>& query_scales,
                      const at::Tensor& sim_out, const at::Tensor& minmax_out);
void colorize(const at::Tensor& sim, const at::Tensor& lo, const at::Tensor& hi,
              const at::Tensor& lut, const at::Tensor& rgba_out);

enum Metric : int64_t { kInner = FEATVIS_METRIC_INNER, kAngular = FEATVIS_METRIC_ANGULAR, kEuclidean = FEATVIS_METRIC_EUCLIDEAN };

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

// ----------------------------------------------------------------------------
// Shared by the kernel files; defined in similarity_cpu.cpp.

struct TilePlan {
  int64_t tile, ntiles, cblock, grain;
};

TilePlan plan_tiles(int64_t C, int64_t N, int64_t Q);

// Runs accumulate(n0, len) for every tile in parallel, then
// finalize(q, n0, len, mn, mx, nan) for each of its Q rows, and writes the
// per-query [min, max] to minmax.  Per-(tile, query) partials are reduced
// serially afterwards so the result is deterministic and exactly the min/max
// of what was stored.
void run_tiles(const TilePlan& plan, int64_t N, int64_t Q,
               c10::function_ref<void(int64_t, int64_t)> accumulate,
               c10::function_ref<void(int64_t, int64_t, int64_t, float&, float&, bool&)> finalize,
               float* minmax);

// TORCH_CHECKs that t is a defined, contiguous CPU tensor.
void check_cpu_contig(const at::Tensor& t, const char* name);

// ---- Kernels (called by pixel_similarity after the checks) -------------------
// similarity_cpu_float.cpp; T = float, c10::Half or c10::BFloat16.
template <typename T>
void similarity_typed(const at::Tensor& features, const at::Tensor& queries,
                      int64_t metric, const at::Tensor& sim_out,
                      const at::Tensor& minmax_out);
// similarity_cpu_int8.cpp
void similarity_int8(const at::Tensor& features, const at::Tensor& queries,
                     const at::Tensor& scales, const at::Tensor& query_scales,
                     int64_t metric, const at::Tensor& sim_out,
                     const at::Tensor& minmax_out);

}  // namespace cpu
}  // namespace featvis
