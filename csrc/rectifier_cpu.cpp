// featvis-fast CPU kernels for the rectifier rules: fused rectify + bit-packed mask, and the
// backward rule applied from the packed mask in one pass (see rectifier_cpu.h).
#include "rectifier_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace featvis::cpu {
namespace {

constexpr int64_t kWordsPerTask = 2048;  // 64K elements per parallel task

// Elementwise in memory order: any dense layout (contiguous, channels-last, ...) works, as long
// as input and output share it (the mask is in the same memory order).
void check_common(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "featvis_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_non_overlapping_and_dense(), "featvis_cpu: ", name, " must be dense (e.g. contiguous)");
}

void check_same_layout(const at::Tensor& in, const at::Tensor& out, const char* what) {
  TORCH_CHECK(in.strides() == out.strides(), "featvis_cpu: ", what, " must have the same strides as its input");
}

void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, "featvis_cpu: ", name,
              " must be float32, float16 or bfloat16, got ", s);
}

// fp16/bf16 words are widened to a float buffer and narrowed back once (round to nearest even),
// in loops the compiler vectorizes (F16C for fp16 where available).
template <typename T>
inline void widen(const T* src, float* dst, int count) {
  for (int j = 0; j < count; ++j) dst[j] = static_cast<float>(src[j]);
}
template <>
inline void widen<c10::BFloat16>(const c10::BFloat16* src, float* dst, int count) {
  for (int j = 0; j < count; ++j) {
    uint16_t h;
    std::memcpy(&h, src + j, 2);
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    std::memcpy(dst + j, &bits, 4);
  }
}
template <typename T>
inline void narrow(const float* src, T* dst, int count) {
  for (int j = 0; j < count; ++j) dst[j] = static_cast<T>(src[j]);
}
template <>
inline void narrow<c10::BFloat16>(const float* src, c10::BFloat16* dst, int count) {
  for (int j = 0; j < count; ++j) {
    uint32_t bits;
    std::memcpy(&bits, src + j, 4);
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const uint16_t h = nan ? uint16_t(0x7fc0) : static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    std::memcpy(dst + j, &h, 2);
  }
}
#if defined(__F16C__)
template <>
inline void widen<c10::Half>(const c10::Half* src, float* dst, int count) {
  if (count == 32) {
    for (int k = 0; k < 32; k += 8)
      _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  } else {
    for (int j = 0; j < count; ++j) dst[j] = static_cast<float>(src[j]);
  }
}
template <>
inline void narrow<c10::Half>(const float* src, c10::Half* dst, int count) {
  if (count == 32) {
    for (int k = 0; k < 32; k += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    for (int j = 0; j < count; ++j) dst[j] = static_cast<c10::Half>(src[j]);
  }
}
#endif

// One word of 32 (or fewer, at the tail) elements in fp32: y = rectifier(x), bit j = lo < x_j < hi.
template <bool kLeaky>
inline uint32_t rectify_word(const float* x, float* y, int count, float lo, float hi, float slope) {
  uint32_t bits = 0;
  for (int j = 0; j < count; ++j) {
    const float v = x[j];
    const bool pass = (v > lo) & (v < hi);
    float out;
    if constexpr (kLeaky) {
      out = v > lo ? v : v * slope;  // NaN: NaN * slope = NaN
    } else {
      out = v <= lo ? lo : (v >= hi ? hi : v);  // NaN fails both tests and passes through
    }
    y[j] = out;
    bits |= static_cast<uint32_t>(pass) << j;
  }
  return bits;
}

template <typename T, bool kLeaky>
inline uint32_t rectify_any(const T* x, T* y, int count, float lo, float hi, float slope) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if constexpr (std::is_same_v<T, float>) return rectify_word<kLeaky>(x, y, count, lo, hi, slope);
    float xb[32], yb[32];
    for (int j = 0; j < count; ++j) xb[j] = static_cast<float>(x[j]);
    const uint32_t bits = rectify_word<kLeaky>(xb, yb, count, lo, hi, slope);
    for (int j = 0; j < count; ++j) y[j] = yb[j];
    return bits;
  } else {
    float xb[32], yb[32];
    widen<T>(x, xb, count);
    const uint32_t bits = rectify_word<kLeaky>(xb, yb, count, lo, hi, slope);
    narrow<T>(yb, y, count);
    return bits;
  }
}

template <typename T, bool kLeaky>
void rectify_impl(const T* x, T* y, int32_t* packed, int64_t n, float lo, float hi, float slope) {
  const int64_t words = (n + 31) / 32;
  at::parallel_for(0, words, kWordsPerTask, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t base = w * 32;
      const int count = static_cast<int>(std::min<int64_t>(32, n - base));
      // full words take a fixed-trip-count loop, which the compiler vectorizes
      const uint32_t bits = count == 32 ? rectify_any<T, kLeaky>(x + base, y + base, 32, lo, hi, slope)
                                        : rectify_any<T, kLeaky>(x + base, y + base, count, lo, hi, slope);
      if (packed != nullptr) packed[w] = static_cast<int32_t>(bits);
    }
  });
}

// dx = g * (f(m) * d(g)) in fp32; kRule selects which factors apply (no mask read for DeconvNet).
template <int64_t kRule>
inline void backward_word(const float* grad, uint32_t bits, float* dx, int count, float slope) {
  for (int j = 0; j < count; ++j) {
    const float g = grad[j];
    float factor = 1.0f;
    if constexpr (kRule != kRuleDeconvnet) factor = ((bits >> j) & 1u) ? 1.0f : slope;
    if constexpr (kRule != kRuleBackprop) factor = factor * (g > 0.0f ? 1.0f : slope);
    dx[j] = g * factor;
  }
}

template <typename T, int64_t kRule>
inline void backward_any(const T* grad, uint32_t bits, T* dx, int count, float slope) {
  if constexpr (std::is_same_v<T, float>) {
    backward_word<kRule>(grad, bits, dx, count, slope);
  } else {
    float gb[32], db[32];
    if constexpr (std::is_same_v<T, double>) {
      for (int j = 0; j < count; ++j) gb[j] = static_cast<float>(grad[j]);
    } else {
      widen<T>(grad, gb, count);
    }
    backward_word<kRule>(gb, bits, db, count, slope);
    if constexpr (std::is_same_v<T, double>) {
      for (int j = 0; j < count; ++j) dx[j] = db[j];
    } else {
      narrow<T>(db, dx, count);
    }
  }
}

template <typename T, int64_t kRule>
void backward_impl(const T* grad, const int32_t* packed, T* dx, int64_t n, float slope) {
  const int64_t words = (n + 31) / 32;
  at::parallel_for(0, words, kWordsPerTask, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t base = w * 32;
      const int count = static_cast<int>(std::min<int64_t>(32, n - base));
      const uint32_t bits = kRule == kRuleDeconvnet ? 0u : static_cast<uint32_t>(packed[w]);
      if (count == 32) backward_any<T, kRule>(grad + base, bits, dx + base, 32, slope);
      else backward_any<T, kRule>(grad + base, bits, dx + base, count, slope);
    }
  });
}

template <typename T>
void backward_dispatch(const T* grad, const int32_t* packed, T* dx, int64_t n, int64_t rule, float slope) {
  if (rule == kRuleBackprop) backward_impl<T, kRuleBackprop>(grad, packed, dx, n, slope);
  else if (rule == kRuleDeconvnet) backward_impl<T, kRuleDeconvnet>(grad, packed, dx, n, slope);
  else backward_impl<T, kRuleGuided>(grad, packed, dx, n, slope);
}

}  // namespace

void rectify(const at::Tensor& x, double lo, double hi, double slope, const at::Tensor& y_out,
             const at::Tensor& packed_out) {
  check_common(x, "x");
  check_common(y_out, "y_out");
  check_common(packed_out, "packed_out");
  check_float(x, "x");
  TORCH_CHECK(y_out.scalar_type() == x.scalar_type() && y_out.numel() == x.numel(),
              "featvis_cpu: y_out must match x's dtype and size");
  check_same_layout(x, y_out, "y_out");
  TORCH_CHECK(packed_out.scalar_type() == at::kInt, "featvis_cpu: packed_out must be int32");
  const int64_t n = x.numel();
  const bool save = packed_out.numel() > 0;
  TORCH_CHECK(!save || packed_out.numel() == (n + 31) / 32, "featvis_cpu: packed_out must have ",
              (n + 31) / 32, " words (or 0 to save no mask), got ", packed_out.numel());
  TORCH_CHECK(slope == 0.0 || (lo == 0.0 && std::isinf(hi)), "featvis_cpu: a leaky rectifier needs lo=0, hi=inf");
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi), fslope = static_cast<float>(slope);
  int32_t* packed = save ? packed_out.data_ptr<int32_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "featvis_rectify", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y_out.data_ptr<scalar_t>();
    if (slope != 0.0) rectify_impl<scalar_t, true>(xp, yp, packed, n, flo, fhi, fslope);
    else rectify_impl<scalar_t, false>(xp, yp, packed, n, flo, fhi, fslope);
  });
}

void rectify_backward(const at::Tensor& grad, const at::Tensor& packed, int64_t rule, double slope,
                      const at::Tensor& dx_out) {
  check_common(grad, "grad");
  check_common(packed, "packed");
  check_common(dx_out, "dx_out");
  check_float(grad, "grad");
  TORCH_CHECK(rule >= kRuleBackprop && rule <= kRuleGuided, "featvis_cpu: rule must be 0, 1 or 2, got ", rule);
  TORCH_CHECK(dx_out.scalar_type() == grad.scalar_type() && dx_out.numel() == grad.numel(),
              "featvis_cpu: dx_out must match grad's dtype and size");
  check_same_layout(grad, dx_out, "dx_out");
  TORCH_CHECK(packed.scalar_type() == at::kInt, "featvis_cpu: packed must be int32");
  const int64_t n = grad.numel();
  TORCH_CHECK(rule == kRuleDeconvnet || packed.numel() == (n + 31) / 32, "featvis_cpu: packed must have ",
              (n + 31) / 32, " words, got ", packed.numel());
  const int32_t* pp = rule == kRuleDeconvnet ? nullptr : packed.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "featvis_rectify_backward", [&] {
    backward_dispatch<scalar_t>(grad.data_ptr<scalar_t>(), pp, dx_out.data_ptr<scalar_t>(), n, rule,
                                static_cast<float>(slope));
  });
}

}  // namespace featvis::cpu
