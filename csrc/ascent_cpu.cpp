// featvis-fast CPU kernel of the fused gradient-ascent step (see ascent_cpu.h): regularizer gradient,
// SGD/Adam update, clipping and the next jittered crop in one pass over the image.
#include "ascent_cpu.h"

#include "cpu_common.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace featvis::cpu {
namespace {

constexpr int64_t kElemsPerTask = 16384;  // minimum work per parallel task

void check_f32(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  check_cpu_contiguous(t, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.sizes() == shape, "featvis_cpu: ", name, " must be ", shape,
              " float32, got ", t.scalar_type(), " ", t.sizes());
}

// offsets (N, 2) int32 (dy, dx), each putting an h x w window inside the H x W image.
void check_offsets(const at::Tensor& t, const char* name, int64_t N, int64_t h, int64_t w, int64_t H, int64_t W) {
  check_cpu_contiguous(t, name);
  TORCH_CHECK(t.dim() == 2 && t.size(0) == N && t.size(1) == 2 && t.scalar_type() == at::kInt, "featvis_cpu: ",
              name, " must be (", N, ", 2) int32");
  const int32_t* o = t.data_ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(o[2 * n] >= 0 && o[2 * n] + h <= H && o[2 * n + 1] >= 0 && o[2 * n + 1] + w <= W, "featvis_cpu: ",
                name, "[", n, "] puts the ", h, "x", w, " crop outside the ", H, "x", W, " image");
}

struct Params {
  int64_t C, H, W, h, w, ch, cw;
  bool adam, nesterov;
  float lr, momentum, b1, b2, eps, bc1, bc2;  // bc1/bc2: Adam's bias corrections 1 - beta^step
  float l1, l2, lp, p, tv, beta, tv_eps, lo, hi;
  int ip;  // p - 1 when it is an integer in [0, 64], else -1
  bool clip;
};

inline float sign(float v) { return static_cast<float>((v > 0.0f) - (v < 0.0f)); }

// |x|^e: by repeated squaring when e is a small non-negative integer (the usual p = 6 gives e = 5;
// std::pow per element would dominate the step), std::pow otherwise. ie < 0: not an integer.
inline float abs_pow(float x, float e, int ie) {
  float a = std::fabs(x);
  if (ie < 0) return std::pow(a, e);
  float r = 1.0f;
  for (; ie; ie >>= 1, a *= a)
    if (ie & 1) r *= a;
  return r;
}

// TV weights times differences of row i of one plane: wa = w*a, wb = w*b with a = x[i+1]-x[i] (0 on the
// last row), b = x[:, j+1]-x[:, j] (0 on the last column), w = beta*(a^2+b^2+tv_eps)^(beta/2-1).
template <typename T>
void tv_row(const T* plane, int64_t i, const Params& q, float* wa, float* wb) {
  const T* r = plane + i * q.W;
  const T* below = i + 1 < q.H ? r + q.W : nullptr;
  const float ex = q.beta * 0.5f - 1.0f;
  for (int64_t j = 0; j < q.W; ++j) {
    const float xv = static_cast<float>(r[j]);
    const float a = below ? static_cast<float>(below[j]) - xv : 0.0f;
    const float b = j + 1 < q.W ? static_cast<float>(r[j + 1]) - xv : 0.0f;
    const float s = a * a + b * b + q.tv_eps;  // beta 2 and 1 are the common cases: no pow
    const float w = ex == 0.0f ? q.beta : q.beta * (ex == -0.5f ? 1.0f / std::sqrt(s) : std::pow(s, ex));
    wa[j] = w * a;
    wb[j] = w * b;
  }
}

template <typename T>
void ascent_impl(const T* x, const float* g, const int32_t* offsets, const float* scale, const float* m,
                 const float* v, const int32_t* next_offsets, const Params& q, int64_t N, T* out, float* m_out,
                 float* v_out, T* nxt) {
  const int64_t H = q.H, W = q.W;
  const int64_t grain = row_grain(W, kElemsPerTask);
  at::parallel_for(0, N * q.C * H, grain, [&](int64_t r0, int64_t r1) {
    // TV: weighted differences of the row above (prev) and of this row (cur); carried across rows of a plane
    std::vector<float> pa, pb, ca, cb;
    if (q.tv != 0.0f) {
      pa.assign(W, 0.0f), pb.assign(W, 0.0f), ca.assign(W, 0.0f), cb.assign(W, 0.0f);
    }
    int64_t have_prev = -1;  // the row whose TV terms pa/pb hold
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t plane_idx = r / H, y = r % H, n = plane_idx / q.C, c = plane_idx % q.C;
      const T* plane = x + plane_idx * H * W;
      const T* xr = plane + y * W;
      if (q.tv != 0.0f) {
        if (y > 0 && have_prev != r - 1) tv_row(plane, y - 1, q, pa.data(), pb.data());
        tv_row(plane, y, q, ca.data(), cb.data());
      }
      // the objective gradient covers columns [dx, dx + w) of this row when y is inside the crop
      const int64_t gy = y - offsets[2 * n], dx = offsets[2 * n + 1];
      const bool has_g = gy >= 0 && gy < q.h;
      const float* gr = has_g ? g + (plane_idx * q.h + gy) * q.w : nullptr;
      const float s = scale[n];
      const int64_t off = r * W;
      for (int64_t j = 0; j < W; ++j) {
        const float xv = static_cast<float>(xr[j]);
        float reg = 0.0f;
        if (q.l1 != 0.0f) reg += q.l1 * sign(xv);
        if (q.l2 != 0.0f) reg += 2.0f * q.l2 * xv;
        if (q.lp != 0.0f) reg += q.lp * q.p * abs_pow(xv, q.p - 1.0f, q.ip) * sign(xv);
        if (q.tv != 0.0f) {
          float t = -(ca[j] + cb[j]);
          if (y > 0) t += pa[j];
          if (j > 0) t += cb[j - 1];
          reg += q.tv * t;
        }
        const float gv = has_g && j >= dx && j < dx + q.w ? gr[j - dx] * s : 0.0f;
        const float d = gv - reg;
        float xn;
        if (q.adam) {
          const float mn = q.b1 * m[off + j] + (1.0f - q.b1) * d;
          const float vn = q.b2 * v[off + j] + (1.0f - q.b2) * d * d;
          m_out[off + j] = mn;
          v_out[off + j] = vn;
          xn = xv + q.lr * (mn / q.bc1) / (std::sqrt(vn / q.bc2) + q.eps);
        } else {
          const float mn = q.momentum * m[off + j] + d;
          m_out[off + j] = mn;
          xn = xv + q.lr * (q.nesterov ? d + q.momentum * mn : mn);
        }
        if (q.clip) xn = std::min(std::max(xn, q.lo), q.hi);
        out[off + j] = static_cast<T>(xn);
      }
      if (q.tv != 0.0f) {
        std::swap(pa, ca), std::swap(pb, cb);
        have_prev = r;
      }
      // the next jittered crop copies the rounded values of this row that fall inside its window
      const int64_t ny = y - next_offsets[2 * n], ndx = next_offsets[2 * n + 1];
      if (ny >= 0 && ny < q.ch)
        std::copy(out + off + ndx, out + off + ndx + q.cw, nxt + (plane_idx * q.ch + ny) * q.cw);
    }
  });
}

}  // namespace

void ascent_step(const at::Tensor& x, const at::Tensor& g, const at::Tensor& offsets, const at::Tensor& scale,
                 const at::Tensor& m, const at::Tensor& v, const at::Tensor& next_offsets, int64_t step, double lr,
                 int64_t optimizer_code, double momentum, double beta1, double beta2, double eps, double l1,
                 double l2, double lp, double p, double tv, double beta, double tv_eps, double clip_lo,
                 double clip_hi, const at::Tensor& out, const at::Tensor& m_out, const at::Tensor& v_out,
                 const at::Tensor& nxt) {
  check_cpu_contiguous(x, "x");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16,
              "featvis_cpu: x must be float32, float16 or bfloat16, got ", dt);
  TORCH_CHECK(x.dim() == 4, "featvis_cpu: x must be (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(optimizer_code == kOptimizerSgd || optimizer_code == kOptimizerAdam ||
                  optimizer_code == kOptimizerNesterov,
              "featvis_cpu: optimizer_code must be 0 (SGD), 1 (Adam) or 2 (Nesterov), got ", optimizer_code);
  const bool adam = optimizer_code == kOptimizerAdam;
  TORCH_CHECK(!adam || step >= 1, "featvis_cpu: Adam's step counts from 1, got ", step);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_cpu_contiguous(g, "g");
  TORCH_CHECK(g.dim() == 4 && g.size(0) == N && g.size(1) == C && g.size(2) <= H && g.size(3) <= W &&
                  g.scalar_type() == at::kFloat,
              "featvis_cpu: g must be (", N, ", ", C, ", h <= ", H, ", w <= ", W, ") float32, got ", g.sizes());
  check_cpu_contiguous(nxt, "nxt");
  TORCH_CHECK(nxt.dim() == 4 && nxt.size(0) == N && nxt.size(1) == C && nxt.size(2) <= H && nxt.size(3) <= W &&
                  nxt.scalar_type() == dt,
              "featvis_cpu: nxt must be (", N, ", ", C, ", crop_h <= ", H, ", crop_w <= ", W, ") ", dt);
  check_offsets(offsets, "offsets", N, g.size(2), g.size(3), H, W);
  check_offsets(next_offsets, "next_offsets", N, nxt.size(2), nxt.size(3), H, W);
  check_f32(scale, "scale", {N});
  check_f32(m, "m", x.sizes());
  check_f32(m_out, "m_out", x.sizes());
  const std::vector<int64_t> state = adam ? x.sizes().vec() : std::vector<int64_t>{0};
  check_f32(v, "v", state);
  check_f32(v_out, "v_out", state);
  check_cpu_contiguous(out, "out");
  TORCH_CHECK(out.sizes() == x.sizes() && out.scalar_type() == dt, "featvis_cpu: out must match x: ", x.sizes(),
              " ", dt);
  TORCH_CHECK(x.numel() == 0 || (out.data_ptr() != x.data_ptr() && m_out.data_ptr() != m.data_ptr()),
              "featvis_cpu: out and m_out must not alias x and m");
  if (x.numel() == 0) return;

  Params q{};
  q.C = C, q.H = H, q.W = W, q.h = g.size(2), q.w = g.size(3), q.ch = nxt.size(2), q.cw = nxt.size(3);
  q.adam = adam;
  q.nesterov = optimizer_code == kOptimizerNesterov;
  q.lr = static_cast<float>(lr), q.momentum = static_cast<float>(momentum);
  q.b1 = static_cast<float>(beta1), q.b2 = static_cast<float>(beta2), q.eps = static_cast<float>(eps);
  // the bias corrections in double, as the reference's Python scalars
  q.bc1 = static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(step)));
  q.bc2 = static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(step)));
  q.l1 = static_cast<float>(l1), q.l2 = static_cast<float>(l2), q.lp = static_cast<float>(lp);
  q.p = static_cast<float>(p), q.tv = static_cast<float>(tv), q.beta = static_cast<float>(beta);
  q.tv_eps = static_cast<float>(tv_eps);
  q.ip = (p - 1.0 >= 0.0 && p - 1.0 <= 64.0 && p == std::floor(p)) ? static_cast<int>(p - 1.0) : -1;
  q.clip = clip_lo <= clip_hi;
  q.lo = static_cast<float>(clip_lo), q.hi = static_cast<float>(clip_hi);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "featvis_ascent_step", [&] {
    ascent_impl<scalar_t>(x.data_ptr<scalar_t>(), g.data_ptr<float>(), offsets.data_ptr<int32_t>(),
                          scale.data_ptr<float>(), m.data_ptr<float>(), adam ? v.data_ptr<float>() : nullptr,
                          next_offsets.data_ptr<int32_t>(), q, N, out.data_ptr<scalar_t>(), m_out.data_ptr<float>(),
                          adam ? v_out.data_ptr<float>() : nullptr, nxt.data_ptr<scalar_t>());
  });
}

}  // namespace featvis::cpu
