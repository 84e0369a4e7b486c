// featvis-fast CPU kernel of the Network Dissection tally (see dissection_cpu.h): fused bilinear upsampling
// (float64), thresholding, bit packing and popcount intersection, never materializing the upsampled maps.
//
// Exactness: every double operation below is the reference's, in the reference's order, each rounded on its
// own: no multiply-add is fused into an FMA (-ffp-contract=off in featvis_fast/_extensions.py, and the pragma
// below whatever the flags), and nothing here may be compiled with -ffast-math (NaN compares stay false, as in
// torch). The whole-unit / 8-pixel-group shortcuts only skip work whose outcome is certain (see unit_mask).
#include "dissection_cpu.h"

#include "cpu_common.h"

#include <ATen/Parallel.h>

#if (defined(__AVX512F__) || defined(__AVX512BW__) || defined(__AVX512VPOPCNTDQ__)) && \
    !defined(FEATVIS_DISSECTION_PORTABLE)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__FAST_MATH__)
#error "dissection_cpu.cpp must not be built with -ffast-math: the tally must match the float64 reference bit for bit"
#endif
// No FMA contraction in this file whatever the build flags (besides -ffp-contract=off in _extensions.py).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace featvis::cpu {
namespace {

constexpr int64_t kPixelsPerTask = 65536;              // minimum interpolation work per parallel task
#ifndef FEATVIS_DISSECTION_LABEL_BUDGET
#define FEATVIS_DISSECTION_LABEL_BUDGET (int64_t(64) << 20)
#endif
constexpr int64_t kLabelBudgetBytes = FEATVIS_DISSECTION_LABEL_BUDGET;  // packed labels of one group of images
// Bilinear values are convex combinations of the source values, up to a few rounding errors of at most
// 2^-53 times the largest magnitude each (6 roundings on the way): a margin of 1e-13 (~450 ulps) is safe.
constexpr double kRangeMargin = 1e-13;

// PyTorch's align_corners=False source taps of one axis, in float64 as the reference's source_index():
// src = max((o + 0.5) * (in / out) - 0.5, 0); i0 = min(floor(src), in - 1); i1 = min(i0 + 1, in - 1);
// w1 = src - i0; w0 = 1 - w1.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<double> w0, w1;
};

Taps source_taps(int64_t out, int64_t in) {
  Taps t;
  t.i0.resize(out), t.i1.resize(out), t.w0.resize(out), t.w1.resize(out);
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  for (int64_t o = 0; o < out; ++o) {
    double src = (static_cast<double>(o) + 0.5) * scale - 0.5;
    if (src < 0.0) src = 0.0;
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in - 1);
    t.i0[o] = i0;
    t.i1[o] = std::min<int64_t>(i0 + 1, in - 1);
    t.w1[o] = src - static_cast<double>(i0);
    t.w0[o] = 1.0 - t.w1[o];
  }
  return t;
}

// Bit layout of a mask plane (unit masks and labels alike): each row of W pixels starts on a byte, pixel
// (Y, X) is bit X % 8 of byte Y * groups + X / 8, groups = ceil(W / 8); the padding bits of each row's last
// byte and the bytes past H * groups up to a whole 64-bit word stay zero, so popcounts of whole words count
// pixels only. Byte-aligned rows let the kernel store one compare mask byte per group of 8 pixels.

// 8 bytes -> 8 bits: bit j = (byte j != 0).
inline uint8_t pack8(uint64_t x) {
  x |= x >> 1;
  x |= x >> 2;
  x |= x >> 4;
  x &= 0x0101010101010101ULL;                                // bit 0 of each byte: the OR of its bits
  return static_cast<uint8_t>((x * 0x0102040810204080ULL) >> 56);  // byte j's bit 0 -> bit 56 + j (no carries)
}

// One row of W bytes (nonzero = set) -> ceil(W / 8) bytes of bits.
void pack_row(const uint8_t* row, int64_t W, uint8_t* out) {
  int64_t X = 0;
#if defined(__AVX512BW__) && !defined(FEATVIS_DISSECTION_PORTABLE)
  for (; X + 64 <= W; X += 64) {
    const __m512i v = _mm512_loadu_si512(static_cast<const void*>(row + X));
    const uint64_t m = static_cast<uint64_t>(_mm512_test_epi8_mask(v, v));  // bit i = byte i != 0
    std::memcpy(out + X / 8, &m, 8);                                       // little endian: as pack8
  }
#endif
  for (; X + 8 <= W; X += 8) {
    uint64_t x;
    std::memcpy(&x, row + X, 8);
    out[X / 8] = pack8(x);
  }
  if (X < W) {
    uint64_t x = 0;
    std::memcpy(&x, row + X, static_cast<size_t>(W - X));
    out[X / 8] = pack8(x);
  }
}

inline int64_t popcount(const uint64_t* a, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += __builtin_popcountll(a[i]);
  return s;
}

inline int64_t popcount_and(const uint64_t* __restrict__ a, const uint64_t* __restrict__ b, int64_t n) {
#if defined(__AVX512VPOPCNTDQ__) && !defined(FEATVIS_DISSECTION_PORTABLE)
  __m512i acc = _mm512_setzero_si512();
  for (int64_t i = 0; i < n; i += 8) {
    const __mmask8 live = static_cast<__mmask8>(n - i >= 8 ? 0xFF : (1u << (n - i)) - 1);
    const __m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi64(live, a + i), _mm512_maskz_loadu_epi64(live, b + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(v));
  }
  return _mm512_reduce_add_epi64(acc);
#else
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += __builtin_popcountll(a[i] & b[i]);
  return s;
#endif
}

// popcount(a & b) over the words listed in idx (the nonzero words of a).
inline int64_t popcount_and_sparse(const uint64_t* __restrict__ a, const uint64_t* __restrict__ b,
                                   const int32_t* idx, int64_t n) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += __builtin_popcountll(a[idx[i]] & b[idx[i]]);
  return s;
}

#if defined(__AVX512F__) && !defined(FEATVIS_DISSECTION_PORTABLE)
#define FEATVIS_DISSECTION_AVX512 1
#else
#define FEATVIS_DISSECTION_AVX512 0
#endif

struct Problem {
  const float* acts;
  const double* thr;
  int64_t U, K, h, w, H, W, HW;
  int64_t groups;              // 8-pixel column groups per row (= bytes per mask row); Wp = 8 * groups
  int64_t nwords;              // 64-bit words per mask plane
  Taps ty;                     // output rows
  std::vector<int64_t> x0, x1;    // output column taps, padded to Wp with column 0
  std::vector<double> wx0, wx1;   // their weights, padded to Wp with 0
  std::vector<int64_t> g_lo, g_hi;  // the source columns group g reads: [g_lo, g_hi]
  std::vector<uint8_t> g_live;      // the group's pixels inside the row (bit j: column 8 g + j < W)
  std::vector<int64_t> y0s;       // distinct source rows y0 of the output rows (each pairs with y1 = min(y0 + 1, h - 1))
  std::vector<uint64_t> full;     // the plane with every pixel set
};

// Per-task scratch, reused across the task's (image, unit) pairs.
struct Scratch {
  std::vector<double> a0, a1;   // (h, Wp): a[y, x0[X]] and a[y, x1[X]] as float64, rows gathered when needed
  std::vector<char> pair_exact;  // (h): per source row pair y0: some group of it needs the exact path
  std::vector<char> rows_done;  // (h): the rows of a0 / a1 that hold this unit's values
  std::vector<uint8_t> state;   // (h, groups) per source row pair y0 and column group: kZero / kOnes / kExact
  std::vector<uint64_t> mask;   // (nwords): the packed mask, bytes past the plane zero
  std::vector<int32_t> live;    // indices of the nonzero words of mask (sparse masks)

  explicit Scratch(const Problem& p)
      : a0(p.h * p.groups * 8), a1(p.h * p.groups * 8), pair_exact(p.h), rows_done(p.h), state(p.h * p.groups),
        mask(p.nwords, 0), live(p.nwords) {}
};

constexpr uint8_t kZero = 0, kOnes = 1, kExact = 2;

// a0[y, X] = a[y, x0[X]], a1[y, X] = a[y, x1[X]] for X < Wp, as float64.
void gather_row(const Problem& p, const float* a, int64_t y, Scratch& s) {
  const int64_t Wp = p.groups * 8, w = p.w;
  double* r0 = s.a0.data() + y * Wp;
  double* r1 = s.a1.data() + y * Wp;
  const float* ar = a + y * w;
#if FEATVIS_DISSECTION_AVX512
  if (w <= 16) {  // the source row fits two registers: permutes instead of gathers
    const __mmask16 in_row = static_cast<__mmask16>(w >= 16 ? 0xFFFF : (1u << w) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(in_row, ar);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(v), 1)));
    for (int64_t X = 0; X < Wp; X += 8) {
      const __m512i i0 = _mm512_loadu_si512(static_cast<const void*>(p.x0.data() + X));
      const __m512i i1 = _mm512_loadu_si512(static_cast<const void*>(p.x1.data() + X));
      _mm512_storeu_pd(r0 + X, _mm512_permutex2var_pd(lo, i0, hi));
      _mm512_storeu_pd(r1 + X, _mm512_permutex2var_pd(lo, i1, hi));
    }
    return;
  }
#endif
  for (int64_t X = 0; X < Wp; ++X) {
    r0[X] = static_cast<double>(ar[p.x0[X]]);
    r1[X] = static_cast<double>(ar[p.x1[X]]);
  }
}

// The mask bits of 8 output pixels (row Y, columns 8 g ...): the reference's rows[..., x] = a[y0, x] (1 - wy)
// + a[y1, x] wy at x = x0[X] (from a0) and x1[X] (from a1), then up = rows[x0] (1 - wx) + rows[x1] wx, each
// operation rounded on its own, and up > t.
inline uint8_t exact_group(const double* p00, const double* p10, const double* p01, const double* p11,
                           const double* wx0, const double* wx1, double v0, double v1, double t) {
#if FEATVIS_DISSECTION_AVX512
  // each intrinsic is one IEEE operation (no contraction: see the top of the file)
  const __m512d vv0 = _mm512_set1_pd(v0), vv1 = _mm512_set1_pd(v1);
  const __m512d c0 = _mm512_add_pd(_mm512_mul_pd(_mm512_loadu_pd(p00), vv0), _mm512_mul_pd(_mm512_loadu_pd(p10), vv1));
  const __m512d c1 = _mm512_add_pd(_mm512_mul_pd(_mm512_loadu_pd(p01), vv0), _mm512_mul_pd(_mm512_loadu_pd(p11), vv1));
  const __m512d up = _mm512_add_pd(_mm512_mul_pd(c0, _mm512_loadu_pd(wx0)), _mm512_mul_pd(c1, _mm512_loadu_pd(wx1)));
  return static_cast<uint8_t>(_mm512_cmp_pd_mask(up, _mm512_set1_pd(t), _CMP_GT_OQ));
#else
  uint8_t bits = 0;
  for (int j = 0; j < 8; ++j) {
    const double c0 = p00[j] * v0 + p10[j] * v1;
    const double c1 = p01[j] * v0 + p11[j] * v1;
    bits |= static_cast<uint8_t>(((c0 * wx0[j] + c1 * wx1[j]) > t) << j);
  }
  return bits;
#endif
}

// The packed mask of acts[b, u] > t in s.mask. Returns its popcount; -1: every bit 0 (s.mask untouched).
//
// Shortcuts (exact): a bilinear value is a convex combination of its (up to) 4 source values, computed with 6
// roundings, so it lies within [min - 7 eps M, max + 7 eps M] of them (M: the largest magnitude of the unit,
// eps = 2^-53); kRangeMargin M is far wider. A whole unit, or the 8-pixel group of an output row, whose
// sources' max + margin < t is all 0 (NaN sources give NaN pixels: 0 too); min - margin > t (and no NaN in
// the unit) all 1. Only the other groups are interpolated: masks over a top quantile cost a fraction of
// the interpolation. inf anywhere makes the margin infinite: every group then runs the exact path.
int64_t unit_mask(const Problem& p, const float* a, double t, Scratch& s) {
  const int64_t hw = p.h * p.w, w = p.w, G = p.groups;
  float lo = std::numeric_limits<float>::infinity(), hi = -lo, mag = 0.0f;
  bool nan = false;
  for (int64_t i = 0; i < hw; ++i) {
    const float v = a[i];
    nan |= v != v;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    mag = std::fabs(v) > mag ? std::fabs(v) : mag;
  }
  const double margin = kRangeMargin * static_cast<double>(mag);
  if (static_cast<double>(hi) + margin < t) return -1;
  if (!nan && static_cast<double>(lo) - margin > t) {  // every pixel above the threshold
    std::copy(p.full.begin(), p.full.end(), s.mask.begin());
    return p.HW;
  }
  // classify the column groups of each source row pair (y0, y1); gather the rows the exact groups read
  for (const int64_t y0 : p.y0s) {
    const int64_t y1 = std::min<int64_t>(y0 + 1, p.h - 1);
    const float* r0 = a + y0 * w;
    const float* r1 = a + y1 * w;
    uint8_t* st = s.state.data() + y0 * G;
    bool exact = false;
    for (int64_t g = 0; g < G; ++g) {
      float glo = std::numeric_limits<float>::infinity(), ghi = -glo;
      for (int64_t x = p.g_lo[g]; x <= p.g_hi[g]; ++x) {  // NaN sources compare false: skipped
        glo = r0[x] < glo ? r0[x] : glo;
        glo = r1[x] < glo ? r1[x] : glo;
        ghi = r0[x] > ghi ? r0[x] : ghi;
        ghi = r1[x] > ghi ? r1[x] : ghi;
      }
      st[g] = static_cast<double>(ghi) + margin < t                 ? kZero
              : !nan && static_cast<double>(glo) - margin > t ? kOnes
                                                                     : kExact;
      exact |= st[g] == kExact;
    }
    s.pair_exact[y0] = exact;
  }
  const std::vector<char>& pair_exact = s.pair_exact;
  std::fill(s.rows_done.begin(), s.rows_done.end(), 0);
  for (const int64_t y0 : p.y0s) {
    if (!pair_exact[y0]) continue;
    const int64_t y1 = std::min<int64_t>(y0 + 1, p.h - 1);
    if (!s.rows_done[y0]) gather_row(p, a, y0, s), s.rows_done[y0] = 1;
    if (!s.rows_done[y1]) gather_row(p, a, y1, s), s.rows_done[y1] = 1;
  }
  const int64_t Wp = G * 8;
  uint8_t* bits = reinterpret_cast<uint8_t*>(s.mask.data());
  for (int64_t Y = 0; Y < p.H; ++Y) {
    const int64_t y0 = p.ty.i0[Y], y1 = p.ty.i1[Y];
    const uint8_t* st = s.state.data() + y0 * G;
    uint8_t* out = bits + Y * G;
    if (!pair_exact[y0]) {
      for (int64_t g = 0; g < G; ++g) out[g] = st[g] == kOnes ? p.g_live[g] : 0;
      continue;
    }
    const double v0 = p.ty.w0[Y], v1 = p.ty.w1[Y];
    const double* p00 = s.a0.data() + y0 * Wp;
    const double* p10 = s.a0.data() + y1 * Wp;
    const double* p01 = s.a1.data() + y0 * Wp;
    const double* p11 = s.a1.data() + y1 * Wp;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t X = g * 8;
      out[g] = st[g] == kExact ? exact_group(p00 + X, p10 + X, p01 + X, p11 + X, p.wx0.data() + X,
                                             p.wx1.data() + X, v0, v1, t) & p.g_live[g]
               : st[g] == kOnes ? p.g_live[g]
                                : 0;
    }
  }
  return popcount(s.mask.data(), p.nwords);
}

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  check_cpu_contiguous(t, name);
  TORCH_CHECK(t.scalar_type() == dtype && t.sizes() == shape, "featvis_cpu: ", name, " must be ", shape, " ",
              dtype, ", got ", t.sizes(), " ", t.scalar_type());
}

}  // namespace

void dissect_tally(const at::Tensor& acts, const at::Tensor& thresholds, const at::Tensor& labels,
                   const at::Tensor& annotated, const at::Tensor& intersection, const at::Tensor& unit_area,
                   const at::Tensor& label_area) {
  check_cpu_contiguous(acts, "acts");
  check_cpu_contiguous(labels, "labels");
  TORCH_CHECK(acts.dim() == 4 && acts.scalar_type() == at::kFloat, "featvis_cpu: acts must be (B, U, h, w) float32");
  TORCH_CHECK(labels.dim() == 4 && labels.scalar_type() == at::kByte,
              "featvis_cpu: labels must be (B, K, H, W) uint8 (bool viewed as uint8)");
  const int64_t B = acts.size(0), U = acts.size(1), h = acts.size(2), w = acts.size(3);
  const int64_t K = labels.size(1), H = labels.size(2), W = labels.size(3);
  TORCH_CHECK(labels.size(0) == B, "featvis_cpu: labels hold ", labels.size(0), " images, acts ", B);
  TORCH_CHECK(h >= 1 && w >= 1 && H >= 1 && W >= 1, "featvis_cpu: activation and label maps must be at least 1x1");
  check(thresholds, "thresholds", at::kDouble, {U});
  check(annotated, "annotated", at::kByte, {B, K});
  check(intersection, "intersection", at::kLong, {U, K});
  check(unit_area, "unit_area", at::kLong, {U, K});
  check(label_area, "label_area", at::kLong, {K});

  int64_t* inter = intersection.data_ptr<int64_t>();
  int64_t* uarea = unit_area.data_ptr<int64_t>();
  int64_t* larea = label_area.data_ptr<int64_t>();
  std::fill(inter, inter + U * K, int64_t(0));
  std::fill(uarea, uarea + U * K, int64_t(0));
  std::fill(larea, larea + K, int64_t(0));
  if (B == 0 || K == 0) return;  // (U == 0 still counts label_area)

  Problem p;
  p.acts = acts.data_ptr<float>();
  p.thr = thresholds.data_ptr<double>();
  p.U = U, p.K = K, p.h = h, p.w = w, p.H = H, p.W = W, p.HW = H * W;
  p.groups = (W + 7) / 8;
  p.nwords = (H * p.groups + 7) / 8;
  p.ty = source_taps(H, h);
  {
    const Taps tx = source_taps(W, w);
    const int64_t Wp = p.groups * 8;
    p.x0.assign(Wp, 0), p.x1.assign(Wp, 0), p.wx0.assign(Wp, 0.0), p.wx1.assign(Wp, 0.0);
    std::copy(tx.i0.begin(), tx.i0.end(), p.x0.begin());
    std::copy(tx.i1.begin(), tx.i1.end(), p.x1.begin());
    std::copy(tx.w0.begin(), tx.w0.end(), p.wx0.begin());
    std::copy(tx.w1.begin(), tx.w1.end(), p.wx1.begin());
    p.g_lo.resize(p.groups), p.g_hi.resize(p.groups), p.g_live.resize(p.groups);
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t last = std::min<int64_t>(8 * g + 7, W - 1);
      p.g_lo[g] = std::min(tx.i0[8 * g], tx.i1[8 * g]);
      p.g_hi[g] = std::max(tx.i0[last], tx.i1[last]);  // the taps never decrease along the row
      p.g_live[g] = static_cast<uint8_t>(last - 8 * g == 7 ? 0xFF : (1u << (last - 8 * g + 1)) - 1);
    }
  }
  for (int64_t Y = 0; Y < H; ++Y)
    if (Y == 0 || p.ty.i0[Y] != p.ty.i0[Y - 1]) p.y0s.push_back(p.ty.i0[Y]);
  {
    p.full.assign(p.nwords, 0);
    uint8_t* full = reinterpret_cast<uint8_t*>(p.full.data());
    for (int64_t Y = 0; Y < H; ++Y)
      for (int64_t g = 0; g < p.groups; ++g) full[Y * p.groups + g] = p.g_live[g];
  }

  const uint8_t* lab = labels.data_ptr<uint8_t>();
  const uint8_t* ann = annotated.data_ptr<uint8_t>();
  const int64_t plane_words = p.nwords;
  const int64_t group_pairs = std::max<int64_t>(K, kLabelBudgetBytes / (plane_words * 8));

  std::vector<int64_t> pair_k;      // concept of each packed label plane of the group
  std::vector<int64_t> pair_b;      // its image
  std::vector<int64_t> first;       // first pair of each image of the group (+ end)
  std::vector<uint64_t> packed;     // (pairs, nwords)
  std::vector<int64_t> pair_count;  // popcount of each plane
  for (int64_t b0 = 0; b0 < B;) {
    // the group: images [b0, b1) whose annotated planes fit the budget (at least one image)
    pair_k.clear(), pair_b.clear(), first.clear();
    int64_t b1 = b0;
    for (; b1 < B; ++b1) {
      int64_t n = 0;
      for (int64_t k = 0; k < K; ++k) n += ann[b1 * K + k] != 0;
      if (b1 > b0 && static_cast<int64_t>(pair_k.size()) + n > group_pairs) break;
      first.push_back(static_cast<int64_t>(pair_k.size()));
      for (int64_t k = 0; k < K; ++k)
        if (ann[b1 * K + k]) pair_k.push_back(k), pair_b.push_back(b1);
    }
    first.push_back(static_cast<int64_t>(pair_k.size()));
    const int64_t pairs = static_cast<int64_t>(pair_k.size());
    if (pairs == 0) {
      b0 = b1;
      continue;
    }
    packed.resize(pairs * plane_words);
    pair_count.resize(pairs);
    at::parallel_for(0, pairs, std::max<int64_t>(1, kPixelsPerTask / p.HW), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        uint64_t* words = packed.data() + j * plane_words;
        words[plane_words - 1] = 0;  // the bytes past the plane
        const uint8_t* plane = lab + (pair_b[j] * K + pair_k[j]) * p.HW;
        uint8_t* out = reinterpret_cast<uint8_t*>(words);
        for (int64_t Y = 0; Y < H; ++Y) pack_row(plane + Y * W, W, out + Y * p.groups);
        pair_count[j] = popcount(words, plane_words);
      }
    });
    for (int64_t j = 0; j < pairs; ++j) larea[pair_k[j]] += pair_count[j];
    if (U == 0) {
      b0 = b1;
      continue;
    }

    const int64_t per_unit = (b1 - b0) * p.HW;
    at::parallel_for(0, U, std::max<int64_t>(1, kPixelsPerTask / per_unit), [&](int64_t u0, int64_t u1) {
      Scratch s(p);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = first[b - b0], j1 = first[b - b0 + 1];
        if (j0 == j1) continue;  // nothing annotated in this image
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t cnt = unit_mask(p, p.acts + (b * U + u) * h * w, p.thr[u], s);
          if (cnt <= 0) continue;  // an empty mask adds nothing
          int64_t* irow = inter + u * K;
          int64_t* urow = uarea + u * K;
          const uint64_t* m = s.mask.data();
          if (cnt == p.HW) {  // every pixel: the label's own count
            for (int64_t j = j0; j < j1; ++j) irow[pair_k[j]] += pair_count[j], urow[pair_k[j]] += cnt;
            continue;
          }
          // masks over a top quantile are mostly empty words: visit only the others when few
          int64_t nz = 0;
          for (int64_t i = 0; i < plane_words; ++i) {
            s.live[nz] = static_cast<int32_t>(i);
            nz += m[i] != 0;
          }
          const bool sparse = nz * 4 < plane_words;
          for (int64_t j = j0; j < j1; ++j) {
            const uint64_t* l = packed.data() + j * plane_words;
            irow[pair_k[j]] += sparse ? popcount_and_sparse(m, l, s.live.data(), nz) : popcount_and(m, l, plane_words);
            urow[pair_k[j]] += cnt;
          }
        }
      }
    });
    b0 = b1;
  }
}

}  // namespace featvis::cpu
