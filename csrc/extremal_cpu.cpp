// featvis-fast CPU kernels for the extremal-perturbation ops: smooth masks and blended pyramid
// levels, forward and backward (see extremal_cpu.h).
#include "extremal_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace featvis::cpu {
namespace {

constexpr int kLanes = 8;  // taps are processed in blocks of 8 (one AVX2 register)

void check_f32(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "featvis_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "featvis_cpu: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "featvis_cpu: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "featvis_cpu: ", name, " must be ", dim, "-D, got ", t.dim(), "-D");
}

// Eight floats in one register (GCC / Clang vector extensions; AVX2 under -march=native).
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof(v)); }
inline f8 splat8(float x) { return f8{x, x, x, x, x, x, x, x}; }
inline f8 max8(f8 a, f8 b) { return a > b ? a : b; }
inline float hmax8(f8 v) {
  float m = v[0];
  for (int l = 1; l < kLanes; ++l) m = std::max(m, v[l]);
  return m;
}
inline float hsum8(f8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

// exp(x) for x <= 0 to about 1 ulp (Cephes expf: x = n ln2 + r, a degree-6 polynomial in r);
// x below -87 gives exp(-87) (a normal float; the callers' sums are >= 1).
inline f8 exp_nonpositive(f8 x) {
  x = max8(x, splat8(-87.0f));
  const f8 fx = x * splat8(1.44269504088896341f) + splat8(0.5f);
  const f8 t = __builtin_convertvector(__builtin_convertvector(fx, i8), f8);  // trunc
  const f8 n = t + __builtin_convertvector(t > fx, f8);                    // floor: -1 where trunc rounded up
  const f8 r = (x - n * splat8(0.693359375f)) - n * splat8(-2.12194440e-4f);
  f8 p = splat8(1.9875691500e-4f);
  p = p * r + splat8(1.3981999507e-3f);
  p = p * r + splat8(8.3334519073e-3f);
  p = p * r + splat8(4.1665795894e-2f);
  p = p * r + splat8(1.6666665459e-1f);
  p = p * r + splat8(5.0000001201e-1f);
  const f8 y = p * (r * r) + r + splat8(1.0f);
  const i8 bits = (__builtin_convertvector(n, i8) + 127) << 23;
  f8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// The mask geometry and the padded tap table: weights (s, s, T) -> (s*s, Tp), Tp a multiple of 8,
// with 0 weights and -inf logits on the padding taps.
struct Taps {
  int64_t step, side, taps, padded;
  std::vector<float> weight;  // (s*s, Tp)
  std::vector<float> bias;    // (Tp,): 0 on real taps, -inf on padding
};

Taps make_taps(const at::Tensor& weights) {
  check_f32(weights, "weights", 3);
  Taps t;
  t.step = weights.size(0);
  t.taps = weights.size(2);
  t.side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(t.taps))));
  TORCH_CHECK(weights.size(1) == t.step && t.side * t.side == t.taps && t.side % 2 == 1,
              "featvis_cpu: weights must be (step, step, R*R) with R odd");
  t.padded = (t.taps + kLanes - 1) / kLanes * kLanes;
  t.weight.assign(t.step * t.step * t.padded, 0.0f);
  const float* w = weights.data_ptr<float>();
  for (int64_t a = 0; a < t.step * t.step; ++a) std::copy(w + a * t.taps, w + (a + 1) * t.taps, &t.weight[a * t.padded]);
  t.bias.assign(t.padded, -std::numeric_limits<float>::infinity());
  std::fill(t.bias.begin(), t.bias.begin() + t.taps, 0.0f);
  return t;
}

// patch[t] = params[cy + ty - padding, cx + tx - padding] (0 outside), t = ty * side + tx.
void gather_patch(const float* p, int64_t h, int64_t w, int64_t cy, int64_t cx, int64_t padding, int64_t side,
                  float* patch) {
  for (int64_t ty = 0; ty < side; ++ty) {
    const int64_t iy = cy + ty - padding;
    for (int64_t tx = 0; tx < side; ++tx) {
      const int64_t ix = cx + tx - padding;
      patch[ty * side + tx] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? p[iy * w + ix] : 0.0f;
    }
  }
}

// One pixel: v = w * patch, z = coldness v; e = exp(z - max z) and its sum; returns the pooled
// value sum v e / sum e. v and e (Tp,) are kept for the backward.
inline float pool_pixel(const float* w, const float* patch, const float* bias, int64_t tp, float coldness, float* v,
                        float* e, float* sum_out) {
  const f8 c = splat8(coldness);
  f8 mx = splat8(-std::numeric_limits<float>::infinity());
  for (int64_t t = 0; t < tp; t += kLanes) {
    const f8 vt = load8(w + t) * load8(patch + t);
    const f8 z = c * vt + load8(bias + t);
    store8(v + t, vt);
    store8(e + t, z);
    mx = max8(mx, z);
  }
  const f8 m = splat8(hmax8(mx));
  f8 s = splat8(0.0f), a = splat8(0.0f);
  for (int64_t t = 0; t < tp; t += kLanes) {
    const f8 et = exp_nonpositive(load8(e + t) - m);
    store8(e + t, et);
    s += et;
    a += load8(v + t) * et;
  }
  const float sum = hsum8(s);
  *sum_out = sum;
  return hsum8(a) / sum;
}

}  // namespace

void smooth_masks(const at::Tensor& params, const at::Tensor& weights, int64_t padding, double coldness,
                  at::Tensor& out) {
  check_f32(params, "params", 3);
  check_f32(out, "out", 3);
  const Taps taps = make_taps(weights);
  const int64_t K = params.size(0), h = params.size(1), w = params.size(2);
  const int64_t Ho = out.size(1), Wo = out.size(2), s = taps.step;
  TORCH_CHECK(out.size(0) == K, "featvis_cpu: out must hold one mask per parameter grid");
  const int64_t cells_h = (Ho + s - 1) / s, cells_w = (Wo + s - 1) / s, tp = taps.padded;
  const float c = static_cast<float>(coldness);
  const float* P = params.data_ptr<float>();
  float* O = out.data_ptr<float>();
  at::parallel_for(0, K * cells_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> patch(tp, 0.0f), v(tp), e(tp);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t k = job / cells_h, cy = job % cells_h;
      const float* p = P + k * h * w;
      for (int64_t cx = 0; cx < cells_w; ++cx) {
        gather_patch(p, h, w, cy, cx, padding, taps.side, patch.data());
        for (int64_t ay = 0; ay < s && cy * s + ay < Ho; ++ay) {
          float* row = O + (k * Ho + cy * s + ay) * Wo + cx * s;
          for (int64_t ax = 0; ax < s && cx * s + ax < Wo; ++ax) {
            float sum;
            const float pooled = pool_pixel(&taps.weight[(ay * s + ax) * tp], patch.data(), taps.bias.data(), tp, c,
                                            v.data(), e.data(), &sum);
            row[ax] = std::min(std::max(pooled, 0.0f), 1.0f);
          }
        }
      }
    }
  });
}

void smooth_masks_backward(const at::Tensor& grad, const at::Tensor& params, const at::Tensor& weights,
                           int64_t padding, double coldness, at::Tensor& grad_params) {
  check_f32(grad, "grad", 3);
  check_f32(params, "params", 3);
  check_f32(grad_params, "grad_params", 3);
  const Taps taps = make_taps(weights);
  const int64_t K = params.size(0), h = params.size(1), w = params.size(2);
  const int64_t Ho = grad.size(1), Wo = grad.size(2), s = taps.step, side = taps.side;
  TORCH_CHECK(grad.size(0) == K && grad_params.sizes() == params.sizes(),
              "featvis_cpu: grad must be (K, Ho, Wo) and grad_params shaped like params");
  const int64_t cells_h = (Ho + s - 1) / s, cells_w = (Wo + s - 1) / s, tp = taps.padded;
  const float c = static_cast<float>(coldness);
  const float* P = params.data_ptr<float>();
  const float* G = grad.data_ptr<float>();
  float* GP = grad_params.data_ptr<float>();
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> patch(tp, 0.0f), v(tp), e(tp), dpatch(tp);
    for (int64_t k = begin; k < end; ++k) {
      const float* p = P + k * h * w;
      float* gp = GP + k * h * w;
      std::fill(gp, gp + h * w, 0.0f);
      for (int64_t cy = 0; cy < cells_h; ++cy)
        for (int64_t cx = 0; cx < cells_w; ++cx) {
          gather_patch(p, h, w, cy, cx, padding, side, patch.data());
          std::fill(dpatch.begin(), dpatch.end(), 0.0f);
          bool any = false;
          for (int64_t ay = 0; ay < s && cy * s + ay < Ho; ++ay) {
            const float* grow = G + (k * Ho + cy * s + ay) * Wo + cx * s;
            for (int64_t ax = 0; ax < s && cx * s + ax < Wo; ++ax) {
              const float g = grow[ax];
              if (g == 0.0f) continue;
              const float* wt = &taps.weight[(ay * s + ax) * tp];
              float sum;
              const float pooled = pool_pixel(wt, patch.data(), taps.bias.data(), tp, c, v.data(), e.data(), &sum);
              if (!(pooled >= 0.0f && pooled <= 1.0f)) continue;  // the clamp is active
              const f8 gs = splat8(g / sum), cv = splat8(c), pv = splat8(pooled), one = splat8(1.0f);
              for (int64_t t = 0; t < tp; t += kLanes)
                store8(&dpatch[t], load8(&dpatch[t]) + gs * load8(&e[t]) * (one + cv * (load8(&v[t]) - pv)) *
                                                          load8(wt + t));
              any = true;
            }
          }
          if (!any) continue;
          for (int64_t ty = 0; ty < side; ++ty) {
            const int64_t iy = cy + ty - padding;
            if (iy < 0 || iy >= h) continue;
            for (int64_t tx = 0; tx < side; ++tx) {
              const int64_t ix = cx + tx - padding;
              if (ix >= 0 && ix < w) gp[iy * w + ix] += dpatch[ty * side + tx];
            }
          }
        }
    }
  });
}

namespace {

struct BlendShape {
  int64_t B, L, C, H, W, N;
};

BlendShape check_blend(const at::Tensor& pyramid, const at::Tensor& masks, const at::Tensor& src,
                       const at::Tensor& images, bool nhwc, const char* images_name) {
  check_f32(pyramid, "pyramid", 5);
  check_f32(masks, "masks", 3);
  check_f32(images, images_name, 4);
  TORCH_CHECK(src.device().is_cpu() && src.is_contiguous() && src.dim() == 1 && src.scalar_type() == at::kInt,
              "featvis_cpu: src must be a contiguous 1-D int32 CPU tensor");
  BlendShape b{pyramid.size(0), pyramid.size(1), pyramid.size(2), pyramid.size(3), pyramid.size(4), masks.size(0)};
  TORCH_CHECK(masks.size(1) == b.H && masks.size(2) == b.W && src.size(0) == b.N,
              "featvis_cpu: masks must be (N, H, W) and src (N,) for a (B, L, C, H, W) pyramid");
  const auto expected = nhwc ? std::vector<int64_t>{b.N, b.H, b.W, b.C} : std::vector<int64_t>{b.N, b.C, b.H, b.W};
  TORCH_CHECK(images.sizes() == at::IntArrayRef(expected), "featvis_cpu: ", images_name, " has the wrong shape");
  const int32_t* s = src.data_ptr<int32_t>();
  for (int64_t n = 0; n < b.N; ++n)
    TORCH_CHECK(s[n] >= 0 && s[n] < b.B, "featvis_cpu: src[", n, "] = ", s[n], " is outside [0, ", b.B, ")");
  return b;
}

// The two levels and the fraction a mask value selects.
inline void level_of(float m, bool complement, int64_t L, int64_t* k0, int64_t* k1, float* f) {
  const float w = (complement ? 1.0f - m : m) * static_cast<float>(L - 1);
  const float k = std::floor(w);
  *f = w - k;
  *k0 = std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(k), 0), L - 1);
  *k1 = std::min<int64_t>(*k0 + 1, L - 1);
}

}  // namespace

void blend_levels(const at::Tensor& pyramid, const at::Tensor& masks, const at::Tensor& src, bool complement,
                  bool flip, bool nhwc, at::Tensor& out) {
  const BlendShape b = check_blend(pyramid, masks, src, out, nhwc, "out");
  const float* Y = pyramid.data_ptr<float>();
  const float* M = masks.data_ptr<float>();
  const int32_t* S = src.data_ptr<int32_t>();
  float* O = out.data_ptr<float>();
  const int64_t plane = b.H * b.W;
  at::parallel_for(0, b.N * b.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t n = job / b.H, y = job % b.H;
      const float* image = Y + static_cast<int64_t>(S[n]) * b.L * b.C * plane;
      for (int64_t x = 0; x < b.W; ++x) {
        const int64_t xs = flip ? b.W - 1 - x : x;
        int64_t k0, k1;
        float f;
        level_of(M[(n * b.H + y) * b.W + xs], complement, b.L, &k0, &k1, &f);
        const float* y0 = image + k0 * b.C * plane + y * b.W + xs;
        const float* y1 = image + k1 * b.C * plane + y * b.W + xs;
        for (int64_t c = 0; c < b.C; ++c) {
          const float value = (1.0f - f) * y0[c * plane] + f * y1[c * plane];
          O[nhwc ? ((n * b.H + y) * b.W + x) * b.C + c : ((n * b.C + c) * b.H + y) * b.W + x] = value;
        }
      }
    }
  });
}

void blend_levels_backward(const at::Tensor& grad, const at::Tensor& pyramid, const at::Tensor& masks,
                           const at::Tensor& src, bool complement, bool flip, bool nhwc, at::Tensor& grad_masks) {
  const BlendShape b = check_blend(pyramid, masks, src, grad, nhwc, "grad");
  check_f32(grad_masks, "grad_masks", 3);
  TORCH_CHECK(grad_masks.sizes() == masks.sizes(), "featvis_cpu: grad_masks must be shaped like masks");
  const float* Y = pyramid.data_ptr<float>();
  const float* M = masks.data_ptr<float>();
  const float* G = grad.data_ptr<float>();
  const int32_t* S = src.data_ptr<int32_t>();
  float* GM = grad_masks.data_ptr<float>();
  const int64_t plane = b.H * b.W;
  const float scale = (complement ? -1.0f : 1.0f) * static_cast<float>(b.L - 1);
  at::parallel_for(0, b.N * b.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t n = job / b.H, y = job % b.H;
      const float* image = Y + static_cast<int64_t>(S[n]) * b.L * b.C * plane;
      for (int64_t x = 0; x < b.W; ++x) {
        const int64_t xs = flip ? b.W - 1 - x : x;
        int64_t k0, k1;
        float f;
        level_of(M[(n * b.H + y) * b.W + xs], complement, b.L, &k0, &k1, &f);
        const float* y0 = image + k0 * b.C * plane + y * b.W + xs;
        const float* y1 = image + k1 * b.C * plane + y * b.W + xs;
        float acc = 0.0f;
        for (int64_t c = 0; c < b.C; ++c) {
          const float g = G[nhwc ? ((n * b.H + y) * b.W + x) * b.C + c : ((n * b.C + c) * b.H + y) * b.W + x];
          acc += g * (y1[c * plane] - y0[c * plane]);
        }
        GM[(n * b.H + y) * b.W + xs] = scale * acc;
      }
    }
  });
}

}  // namespace featvis::cpu
