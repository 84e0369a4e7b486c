// featvis-fast CPU kernel for the patch op of exact incremental occlusion: tiles of the clean
// activation with each window's patch pasted in, padded past the map's edge (see patches_cpu.h).
#include "patches_cpu.h"

#include "cpu_common.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace featvis::cpu {
namespace {

// A pure copy: elements move as raw words of their size.
template <typename T>
inline void copy(T* dst, const T* src, int64_t count) {
  if (count > 0) std::memcpy(dst, src, count * sizeof(T));
}

template <typename T>
inline void fill(T* dst, T value, int64_t count) {
  if (count > 0) std::fill_n(dst, count, value);
}

// The raw word of a value (pad converted to the dtype with c10's rounding to nearest even).
template <typename T, typename V>
T bits_of(V value) {
  static_assert(sizeof(T) == sizeof(V), "a word of the value's size");
  T bits;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

// Every output row is the tile's columns j in [0, TW) at map columns x = tile_x + j: pad where x is
// outside [0, W) (j outside [m0, m1)), the patch on [p0, p1) (inside [m0, m1): the patch box lies in
// the map), base elsewhere; a row whose map row y lies outside [0, H) is all pad. `unit` elements per
// column: 1 (NCHW rows (n, c, i)) or C (NHWC rows (n, i): a pixel's C channels are contiguous, and so
// are the pixels of a row, in base, patches and out alike).
template <typename T>
void gather_impl(const T* base, const int32_t* src, const int32_t* corners, const T* patches, T pad, bool nhwc,
                 int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, int64_t TH, int64_t TW, T* out) {
  const int64_t unit = nhwc ? C : 1;
  const int64_t row_len = TW * unit;
  const int64_t rows = nhwc ? N * TH : N * C * TH;
  at::parallel_for(0, rows, row_grain(row_len), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = nhwc ? r / TH : r / (C * TH);
      const int64_t c = nhwc ? 0 : (r / TH) % C;
      const int64_t i = r % TH;
      const int32_t* k = corners + 4 * n;
      const int64_t y = static_cast<int64_t>(k[0]) + i, tx = k[1], px = k[3];
      T* o = out + r * row_len;
      if (y < 0 || y >= H) {
        fill(o, pad, row_len);
        continue;
      }
      const int64_t m0 = std::clamp<int64_t>(-tx, 0, TW);
      const int64_t m1 = std::clamp<int64_t>(W - tx, m0, TW);
      const int64_t ry = y - k[2];
      int64_t p0 = m0, p1 = m0;
      if (ry >= 0 && ry < PH && PW > 0) {
        p0 = std::clamp<int64_t>(px - tx, m0, m1);
        p1 = std::clamp<int64_t>(px + PW - tx, p0, m1);
      }
      const int64_t b = src[n];
      // offsets of map column 0 in base's row y and of patch column 0 in the patch's row ry
      const int64_t b_row = nhwc ? (b * H + y) * W * C : ((b * C + c) * H + y) * W;
      fill(o, pad, m0 * unit);
      if (p0 > m0) copy(o + m0 * unit, base + b_row + (tx + m0) * unit, (p0 - m0) * unit);
      if (p1 > p0) {
        const int64_t p_row = nhwc ? (n * PH + ry) * PW * C : ((n * C + c) * PH + ry) * PW;
        copy(o + p0 * unit, patches + p_row + (tx + p0 - px) * unit, (p1 - p0) * unit);
      }
      if (m1 > p1) copy(o + p1 * unit, base + b_row + (tx + p1) * unit, (m1 - p1) * unit);
      fill(o + m1 * unit, pad, (TW - m1) * unit);
    }
  });
}

template <typename T>
void gather_typed(const at::Tensor& base, const at::Tensor& src, const at::Tensor& corners, const at::Tensor& patches,
                  T pad, bool nhwc, int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                  int64_t TH, int64_t TW, at::Tensor& out) {
  gather_impl(static_cast<const T*>(base.data_ptr()), src.data_ptr<int32_t>(), corners.data_ptr<int32_t>(),
              static_cast<const T*>(patches.data_ptr()), pad, nhwc, N, C, H, W, PH,
              PW, TH, TW, static_cast<T*>(out.data_ptr()));
}

}  // namespace

void gather_patches(const at::Tensor& base, const at::Tensor& src, const at::Tensor& corners,
                    const at::Tensor& patches, double pad, bool nhwc, at::Tensor& out) {
  check_cpu_contiguous(base, "base");
  check_cpu_contiguous(src, "src");
  check_cpu_contiguous(corners, "corners");
  check_cpu_contiguous(patches, "patches");
  check_cpu_contiguous(out, "out");
  const auto s = base.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble,
              "featvis_cpu: base must be float32, float16, bfloat16 or float64, got ", s);
  TORCH_CHECK(base.dim() == 4 && patches.dim() == 4 && out.dim() == 4,
              "featvis_cpu: base, patches and out must be 4-D, got ", base.sizes(), ", ", patches.sizes(), ", ",
              out.sizes());
  TORCH_CHECK(patches.scalar_type() == s && out.scalar_type() == s, "featvis_cpu: patches and out must be ", s);
  TORCH_CHECK(src.dim() == 1 && src.scalar_type() == at::kInt, "featvis_cpu: src must be a 1-D int32 tensor");
  const int64_t N = src.size(0);
  // logical sizes from the memory-order shapes
  const int64_t C = nhwc ? base.size(3) : base.size(1), H = nhwc ? base.size(1) : base.size(2),
                W = nhwc ? base.size(2) : base.size(3);
  const int64_t PH = nhwc ? patches.size(1) : patches.size(2), PW = nhwc ? patches.size(2) : patches.size(3);
  const int64_t TH = nhwc ? out.size(1) : out.size(2), TW = nhwc ? out.size(2) : out.size(3);
  TORCH_CHECK(patches.size(0) == N && (nhwc ? patches.size(3) : patches.size(1)) == C,
              "featvis_cpu: patches must hold ", N, " windows of ", C, " channels, got ", patches.sizes());
  TORCH_CHECK(out.size(0) == N && (nhwc ? out.size(3) : out.size(1)) == C, "featvis_cpu: out must hold ", N,
              " tiles of ", C, " channels, got ", out.sizes());
  TORCH_CHECK(corners.dim() == 2 && corners.size(0) == N && corners.size(1) == 4 && corners.scalar_type() == at::kInt,
              "featvis_cpu: corners must be (", N, ", 4) int32");
  const int32_t* sp = src.data_ptr<int32_t>();
  const int32_t* kp = corners.data_ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(sp[n] >= 0 && sp[n] < base.size(0), "featvis_cpu: src[", n, "] = ", sp[n], " is outside [0, ",
                base.size(0), ")");
    if (PH * PW > 0) {
      const int64_t py = kp[4 * n + 2], px = kp[4 * n + 3];
      TORCH_CHECK(py >= 0 && py + PH <= H && px >= 0 && px + PW <= W, "featvis_cpu: the patch box of window ", n,
                  " (", py, ", ", px, ") + (", PH, ", ", PW, ") is outside the ", H, " x ", W, " map");
    }
  }
  if (out.numel() == 0) return;
  const float pad32 = static_cast<float>(pad);
  switch (s) {
    case at::kHalf:
      gather_typed(base, src, corners, patches, bits_of<uint16_t>(c10::Half(pad32)), nhwc, N, C, H, W, PH, PW, TH, TW,
                   out);
      break;
    case at::kBFloat16:
      gather_typed(base, src, corners, patches, bits_of<uint16_t>(c10::BFloat16(pad32)), nhwc, N, C, H, W, PH, PW, TH,
                   TW, out);
      break;
    case at::kFloat:
      gather_typed(base, src, corners, patches, bits_of<uint32_t>(pad32), nhwc, N, C, H, W, PH, PW, TH, TW, out);
      break;
    default:  // double
      gather_typed(base, src, corners, patches, bits_of<uint64_t>(pad), nhwc, N, C, H, W, PH, PW, TH, TW, out);
  }
}

}  // namespace featvis::cpu
