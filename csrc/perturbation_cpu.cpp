// featvis-fast CPU kernels for the perturbation ops: occlusion copies, box accumulation, RISE masks
// and mask blending (see perturbation_cpu.h).
#include "perturbation_cpu.h"

#include "cpu_common.h"

#include <ATen/Parallel.h>
#include <ATen/ops/upsample_bilinear2d.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace featvis::cpu {
namespace {

void check_float(const at::Tensor& t, const char* name) {
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, "featvis_cpu: ", name,
              " must be float32, float16 or bfloat16, got ", s);
}

// src (N,) int32 with every entry in [0, batch).
void check_src(const at::Tensor& src, int64_t batch) {
  check_cpu_contiguous(src, "src");
  TORCH_CHECK(src.dim() == 1 && src.scalar_type() == at::kInt, "featvis_cpu: src must be a 1-D int32 tensor");
  const int32_t* s = src.data_ptr<int32_t>();
  for (int64_t n = 0; n < src.numel(); ++n)
    TORCH_CHECK(s[n] >= 0 && s[n] < batch, "featvis_cpu: src[", n, "] = ", s[n], " is outside [0, ", batch, ")");
}

// boxes (n, 6) int32, each inside (planes, height, width) with lo <= hi.
void check_boxes(const at::Tensor& boxes, int64_t n, int64_t planes, int64_t height, int64_t width) {
  check_cpu_contiguous(boxes, "boxes");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == n && boxes.size(1) == 6 && boxes.scalar_type() == at::kInt,
              "featvis_cpu: boxes must be (", n, ", 6) int32");
  const int32_t* b = boxes.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i, b += 6)
    TORCH_CHECK(0 <= b[0] && b[0] <= b[1] && b[1] <= height && 0 <= b[2] && b[2] <= b[3] && b[3] <= width &&
                    0 <= b[4] && b[4] <= b[5] && b[5] <= planes,
                "featvis_cpu: boxes[", i, "] must lie inside (", planes, ", ", height, ", ", width, ")");
}

// x, fill (B, D1, D2, D3) and out (N, D1, D2, D3): contiguous, one float dtype.
void check_images(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& out, int64_t n) {
  check_cpu_contiguous(x, "x");
  check_cpu_contiguous(fill, "fill");
  check_cpu_contiguous(out, "out");
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4, "featvis_cpu: x must be 4-D, got ", x.dim(), "-D");
  TORCH_CHECK(fill.sizes() == x.sizes() && fill.scalar_type() == x.scalar_type(),
              "featvis_cpu: fill must match x's shape and dtype");
  TORCH_CHECK(out.dim() == 4 && out.size(0) == n && out.sizes().slice(1) == x.sizes().slice(1) &&
                  out.scalar_type() == x.scalar_type(),
              "featvis_cpu: out must be (", n, ", ", x.size(1), ", ", x.size(2), ", ", x.size(3), ") ",
              x.scalar_type());
}

// Occlusion is a pure copy, so elements are moved as raw 2- or 4-byte words.
template <typename T>
inline void copy(T* dst, const T* src, int64_t count) {
  if (count > 0) std::memcpy(dst, src, count * sizeof(T));
}

template <typename T>
void occlude_impl(const T* x, const T* fill, const int32_t* src, const int32_t* boxes, bool nhwc, int64_t n_out,
                  int64_t C, int64_t H, int64_t W, T* out) {
  const int64_t image = C * H * W;
  if (!nhwc) {  // rows (n, c, y) of W elements: [0, x0) from x, [x0, x1) from fill, [x1, W) from x
    at::parallel_for(0, n_out * C * H, row_grain(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / (C * H), c = (r / H) % C, y = r % H;
        const int32_t* b = boxes + n * 6;
        const int64_t off = static_cast<int64_t>(src[n]) * image + (c * H + y) * W;
        const T* xr = x + off;
        T* o = out + r * W;
        if (y >= b[0] && y < b[1] && c >= b[4] && c < b[5]) {
          copy(o, xr, b[2]);
          copy(o + b[2], fill + off + b[2], b[3] - b[2]);
          copy(o + b[3], xr + b[3], W - b[3]);
        } else {
          copy(o, xr, W);
        }
      }
    });
    return;
  }
  const int64_t L = W * C;  // rows (n, y) of W pixels x C channels
  at::parallel_for(0, n_out * H, row_grain(L), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / H, y = r % H;
      const int32_t* b = boxes + n * 6;
      const int64_t off = static_cast<int64_t>(src[n]) * image + y * L;
      const T* xr = x + off;
      const T* fr = fill + off;
      T* o = out + r * L;
      const int64_t x0 = b[2], x1 = b[3], c0 = b[4], c1 = b[5];
      if (y < b[0] || y >= b[1] || c0 == c1) {
        copy(o, xr, L);
        continue;
      }
      copy(o, xr, x0 * C);
      if (c0 == 0 && c1 == C) {
        copy(o + x0 * C, fr + x0 * C, (x1 - x0) * C);
      } else {
        for (int64_t p = x0 * C; p < x1 * C; p += C)
          for (int64_t c = 0; c < C; ++c) o[p + c] = (c >= c0 && c < c1) ? fr[p + c] : xr[p + c];
      }
      copy(o + x1 * C, xr + x1 * C, L - x1 * C);
    }
  });
}

// out = x * m + fill * (1 - m) over one contiguous run, in fp32 (no FMA: -ffp-contract=off).
template <typename T>
inline void blend_run(const T* x, const T* f, const float* m, T* out, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const float mj = m[j];
    out[j] = static_cast<T>(static_cast<float>(x[j]) * mj + static_cast<float>(f[j]) * (1.0f - mj));
  }
}

template <typename T>
void apply_masks_impl(const T* x, const T* fill, const float* masks, const int32_t* src, bool nhwc, int64_t n_out,
                      int64_t C, int64_t H, int64_t W, T* out) {
  const int64_t image = C * H * W;
  if (!nhwc) {  // rows (n, c, y): the mask row lines up with the image row
    at::parallel_for(0, n_out * C * H, row_grain(W), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / (C * H), c = (r / H) % C, y = r % H;
        const int64_t off = static_cast<int64_t>(src[n]) * image + (c * H + y) * W;
        blend_run(x + off, fill + off, masks + (n * H + y) * W, out + r * W, W);
      }
    });
    return;
  }
  const int64_t L = W * C;
  at::parallel_for(0, n_out * H, row_grain(L), [&](int64_t r0, int64_t r1) {
    std::vector<float> wide(L);  // the mask row repeated per channel, so the blend is one flat loop
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / H, y = r % H;
      const float* m = masks + r * W;  // masks (N, H, W): row r = (n, y)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) wide[w * C + c] = m[w];
      const int64_t off = static_cast<int64_t>(src[n]) * image + y * L;
      blend_run(x + off, fill + off, wide.data(), out + r * L, L);
    }
  });
}


}  // namespace

void occlude(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& src, const at::Tensor& boxes,
             bool nhwc, at::Tensor& out) {
  const int64_t n = src.numel();
  check_images(x, fill, out, n);
  const int64_t C = nhwc ? x.size(3) : x.size(1), H = nhwc ? x.size(1) : x.size(2), W = nhwc ? x.size(2) : x.size(3);
  check_src(src, x.size(0));
  check_boxes(boxes, n, C, H, W);
  const int32_t* sp = src.data_ptr<int32_t>();
  const int32_t* bp = boxes.data_ptr<int32_t>();
  if (x.element_size() == 4) {
    occlude_impl(static_cast<const uint32_t*>(x.data_ptr()), static_cast<const uint32_t*>(fill.data_ptr()), sp, bp,
                 nhwc, n, C, H, W, static_cast<uint32_t*>(out.data_ptr()));
  } else {
    occlude_impl(static_cast<const uint16_t*>(x.data_ptr()), static_cast<const uint16_t*>(fill.data_ptr()), sp, bp,
                 nhwc, n, C, H, W, static_cast<uint16_t*>(out.data_ptr()));
  }
}

void box_accumulate(const at::Tensor& values, const at::Tensor& src, const at::Tensor& boxes, at::Tensor& sums,
                    at::Tensor& counts) {
  check_cpu_contiguous(values, "values");
  check_cpu_contiguous(sums, "sums");
  check_cpu_contiguous(counts, "counts");
  TORCH_CHECK(values.dim() == 1 && values.scalar_type() == at::kFloat, "featvis_cpu: values must be 1-D float32");
  TORCH_CHECK(sums.dim() == 4 && sums.scalar_type() == at::kFloat, "featvis_cpu: sums must be (B, P, H, W) float32");
  TORCH_CHECK(counts.sizes() == sums.sizes() && counts.scalar_type() == at::kFloat,
              "featvis_cpu: counts must match sums: ", sums.sizes(), " float32");
  const int64_t N = values.numel(), B = sums.size(0), P = sums.size(1), H = sums.size(2), W = sums.size(3);
  TORCH_CHECK(src.numel() == N, "featvis_cpu: src has ", src.numel(), " entries for ", N, " values");
  check_src(src, B);
  check_boxes(boxes, N, P, H, W);
  const float* vp = values.data_ptr<float>();
  const int32_t* sp = src.data_ptr<int32_t>();
  const int32_t* bp = boxes.data_ptr<int32_t>();
  float* sum = sums.data_ptr<float>();
  float* cnt = counts.data_ptr<float>();

  // Stable bucket of window indices by image, so each row scans only its own image's windows, in order n.
  std::vector<int64_t> start(B + 1, 0), order(N);
  for (int64_t n = 0; n < N; ++n) ++start[sp[n] + 1];
  for (int64_t b = 0; b < B; ++b) start[b + 1] += start[b];
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t n = 0; n < N; ++n) order[next[sp[n]]++] = n;
  }
  // Rows (b, p, y) are owned by one task each: no shared writes, and each element sums in order n.
  at::parallel_for(0, B * P * H, row_grain(W), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / (P * H), p = (r / H) % P, y = r % H;
      float* s = sum + r * W;
      float* c = cnt + r * W;
      std::fill(s, s + W, 0.0f);
      std::fill(c, c + W, 0.0f);
      for (int64_t k = start[b]; k < start[b + 1]; ++k) {
        const int64_t n = order[k];
        const int32_t* bx = bp + n * 6;
        if (y < bx[0] || y >= bx[1] || p < bx[4] || p >= bx[5]) continue;
        const float v = vp[n];
        for (int64_t j = bx[2]; j < bx[3]; ++j) {
          s[j] += v;
          c[j] += 1.0f;
        }
      }
    }
  });
}

void rise_masks(const at::Tensor& grid, const at::Tensor& shifts, int64_t up_h, int64_t up_w, at::Tensor& masks) {
  check_cpu_contiguous(grid, "grid");
  check_cpu_contiguous(shifts, "shifts");
  check_cpu_contiguous(masks, "masks");
  TORCH_CHECK(grid.dim() == 3 && grid.scalar_type() == at::kFloat && grid.size(1) > 0 && grid.size(2) > 0,
              "featvis_cpu: grid must be (N, s_h, s_w) float32 with s_h, s_w > 0");
  const int64_t N = grid.size(0);
  TORCH_CHECK(masks.dim() == 3 && masks.size(0) == N && masks.scalar_type() == at::kFloat,
              "featvis_cpu: masks must be (", N, ", H, W) float32");
  const int64_t H = masks.size(1), W = masks.size(2);
  TORCH_CHECK(shifts.dim() == 2 && shifts.size(0) == N && shifts.size(1) == 2 && shifts.scalar_type() == at::kInt,
              "featvis_cpu: shifts must be (", N, ", 2) int32");
  const int32_t* dp = shifts.data_ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(dp[2 * n] >= 0 && dp[2 * n] + H <= up_h && dp[2 * n + 1] >= 0 && dp[2 * n + 1] + W <= up_w,
                "featvis_cpu: shifts[", n, "] puts the ", H, "x", W, " crop outside the ", up_h, "x", up_w, " mask");
  // the upsampling is torch's own kernel, so the masks are plain PyTorch's bit for bit (a
  // reordered blend differs by an ulp, which the model's forward then amplifies); only the
  // random crops are ours
  const at::Tensor up = at::upsample_bilinear2d(grid.unsqueeze(1), {up_h, up_w}, false).contiguous();
  const float* up_p = up.data_ptr<float>();
  float* mp = masks.data_ptr<float>();
  at::parallel_for(0, N * H, row_grain(W), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / H, i = r % H;
      const float* from = up_p + (n * up_h + i + dp[2 * n]) * up_w + dp[2 * n + 1];
      std::memcpy(mp + r * W, from, sizeof(float) * W);
    }
  });
}

void apply_masks(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& masks, const at::Tensor& src,
                 bool nhwc, at::Tensor& out) {
  const int64_t n = src.numel();
  check_images(x, fill, out, n);
  const int64_t C = nhwc ? x.size(3) : x.size(1), H = nhwc ? x.size(1) : x.size(2), W = nhwc ? x.size(2) : x.size(3);
  check_src(src, x.size(0));
  check_cpu_contiguous(masks, "masks");
  TORCH_CHECK(masks.dim() == 3 && masks.size(0) == n && masks.size(1) == H && masks.size(2) == W &&
                  masks.scalar_type() == at::kFloat,
              "featvis_cpu: masks must be (", n, ", ", H, ", ", W, ") float32");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "featvis_apply_masks", [&] {
    apply_masks_impl<scalar_t>(x.data_ptr<scalar_t>(), fill.data_ptr<scalar_t>(), masks.data_ptr<float>(),
                               src.data_ptr<int32_t>(), nhwc, n, C, H, W, out.data_ptr<scalar_t>());
  });
}

}  // namespace featvis::cpu
