// featvis-fast CUDA kernels for the extremal-perturbation ops (see extremal_cuda.h).
// smooth_masks: one thread per full-mask pixel, two passes over the taps (max logit, then the
// exponentials). Backward in two kernels: per pixel the softmax max, the pooled value and g / sum
// (0 where the clamp is active) into `stats`; then one thread per parameter gathers the pixels
// whose taps read it (no atomics, deterministic). blend: one thread per (copy, pixel), a loop over
// the channels.
#include "extremal_cuda.h"

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

__device__ __forceinline__ float tap_value(const float* p, const float* weights, int64_t h, int64_t w, int64_t step,
                                           int64_t side, int64_t padding, int64_t uy, int64_t ux, int64_t t) {
  const int64_t iy = uy / step + t / side - padding;
  const int64_t ix = ux / step + t % side - padding;
  if (iy < 0 || iy >= h || ix < 0 || ix >= w) return 0.0f;
  return __ldg(weights + ((uy % step) * step + ux % step) * side * side + t) * __ldg(p + iy * w + ix);
}

__device__ __forceinline__ void pool(const float* p, const float* weights, int64_t h, int64_t w, int64_t step,
                                     int64_t side, int64_t padding, float c, int64_t uy, int64_t ux, float& pooled,
                                     float& m, float& s) {
  const int64_t taps = side * side;
  m = -INFINITY;
  for (int64_t t = 0; t < taps; ++t) m = fmaxf(m, c * tap_value(p, weights, h, w, step, side, padding, uy, ux, t));
  s = 0.0f;
  float a = 0.0f;
  for (int64_t t = 0; t < taps; ++t) {
    const float v = tap_value(p, weights, h, w, step, side, padding, uy, ux, t);
    const float e = expf(c * v - m);
    s += e;
    a += v * e;
  }
  pooled = a / s;
}

__global__ void smooth_masks_kernel(const float* __restrict__ params, const float* __restrict__ weights, int64_t K,
                                    int64_t h, int64_t w, int64_t step, int64_t side, int64_t padding, float c,
                                    int64_t Ho, int64_t Wo, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= K * Ho * Wo) return;
  const int64_t k = i / (Ho * Wo), pix = i % (Ho * Wo);
  float pooled, m, s;
  pool(params + k * h * w, weights, h, w, step, side, padding, c, pix / Wo, pix % Wo, pooled, m, s);
  out[i] = fminf(fmaxf(pooled, 0.0f), 1.0f);
}

__global__ void mask_stats_kernel(const float* __restrict__ grad, const float* __restrict__ params,
                                  const float* __restrict__ weights, int64_t K, int64_t h, int64_t w, int64_t step,
                                  int64_t side, int64_t padding, float c, int64_t Ho, int64_t Wo,
                                  float* __restrict__ stats) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t plane = Ho * Wo;
  if (i >= K * plane) return;
  const int64_t k = i / plane, pix = i % plane;
  float pooled, m, s;
  pool(params + k * h * w, weights, h, w, step, side, padding, c, pix / Wo, pix % Wo, pooled, m, s);
  float* base = stats + k * 3 * plane + pix;
  base[0] = m;
  base[plane] = pooled;
  base[2 * plane] = (pooled >= 0.0f && pooled <= 1.0f) ? grad[i] / s : 0.0f;
}

__global__ void smooth_masks_backward_kernel(const float* __restrict__ params, const float* __restrict__ weights,
                                             const float* __restrict__ stats, int64_t K, int64_t h, int64_t w,
                                             int64_t step, int64_t side, int64_t padding, float c, int64_t Ho,
                                             int64_t Wo, float* __restrict__ grad_params) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= K * h * w) return;
  const int64_t k = i / (h * w), iy = (i % (h * w)) / w, ix = i % w;
  const int64_t plane = Ho * Wo, taps = side * side;
  const float p = params[i];
  const float* base = stats + k * 3 * plane;
  float acc = 0.0f;
  for (int64_t t = 0; t < taps; ++t) {
    const int64_t cy = iy - t / side + padding, cx = ix - t % side + padding;  // the cell whose tap t reads p
    if (cy < 0 || cx < 0) continue;
    for (int64_t ay = 0; ay < step; ++ay) {
      const int64_t uy = cy * step + ay;
      if (uy >= Ho) break;
      for (int64_t ax = 0; ax < step; ++ax) {
        const int64_t ux = cx * step + ax;
        if (ux >= Wo) break;
        const int64_t pix = uy * Wo + ux;
        const float coef = __ldg(base + 2 * plane + pix);
        if (coef == 0.0f) continue;
        const float wt = __ldg(weights + (ay * step + ax) * taps + t);
        const float v = wt * p;
        const float e = expf(c * v - __ldg(base + pix));
        acc += coef * e * (1.0f + c * (v - __ldg(base + plane + pix))) * wt;
      }
    }
  }
  grad_params[i] = acc;
}

__device__ __forceinline__ void level_of(float m, int complement, int64_t L, int64_t& k0, int64_t& k1, float& f) {
  const float wl = (complement ? 1.0f - m : m) * static_cast<float>(L - 1);
  const float k = floorf(wl);
  f = wl - k;
  k0 = min(max(static_cast<int64_t>(k), static_cast<int64_t>(0)), L - 1);
  k1 = min(k0 + 1, L - 1);
}

__global__ void blend_levels_kernel(const float* __restrict__ pyramid, const float* __restrict__ masks,
                                    const int32_t* __restrict__ src, int64_t N, int64_t L, int64_t C, int64_t H,
                                    int64_t W, int complement, int flip, int nhwc, float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t plane = H * W;
  if (i >= N * plane) return;
  const int64_t n = i / plane, pix = i % plane, y = pix / W, x = pix % W;
  const int64_t mpix = y * W + (flip ? W - 1 - x : x);
  int64_t k0, k1;
  float f;
  level_of(masks[n * plane + mpix], complement, L, k0, k1, f);
  const float* image = pyramid + static_cast<int64_t>(src[n]) * L * C * plane;
  for (int64_t ch = 0; ch < C; ++ch) {
    const float value = __fadd_rn(__fmul_rn(1.0f - f, __ldg(image + (k0 * C + ch) * plane + mpix)),
                                  __fmul_rn(f, __ldg(image + (k1 * C + ch) * plane + mpix)));
    out[nhwc ? (n * plane + pix) * C + ch : (n * C + ch) * plane + pix] = value;
  }
}

__global__ void blend_levels_backward_kernel(const float* __restrict__ grad, const float* __restrict__ pyramid,
                                             const float* __restrict__ masks, const int32_t* __restrict__ src,
                                             int64_t N, int64_t L, int64_t C, int64_t H, int64_t W, int complement,
                                             int flip, int nhwc, float* __restrict__ grad_masks) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t plane = H * W;
  if (i >= N * plane) return;
  const int64_t n = i / plane, pix = i % plane, y = pix / W, x = pix % W;
  const int64_t mpix = y * W + (flip ? W - 1 - x : x);
  int64_t k0, k1;
  float f;
  level_of(masks[n * plane + mpix], complement, L, k0, k1, f);
  const float* image = pyramid + static_cast<int64_t>(src[n]) * L * C * plane;
  float acc = 0.0f;
  for (int64_t ch = 0; ch < C; ++ch) {
    const float g = grad[nhwc ? (n * plane + pix) * C + ch : (n * C + ch) * plane + pix];
    acc += g * (__ldg(image + (k1 * C + ch) * plane + mpix) - __ldg(image + (k0 * C + ch) * plane + mpix));
  }
  grad_masks[n * plane + mpix] = (complement ? -1.0f : 1.0f) * static_cast<float>(L - 1) * acc;
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

extern "C" int featvis_smooth_masks_cuda(const float* params, const float* weights, int64_t K, int64_t h, int64_t w,
                                         int64_t step, int64_t side, int64_t padding, float coldness, int64_t Ho,
                                         int64_t Wo, float* out, void* stream) {
  const int64_t n = K * Ho * Wo;
  if (n == 0) return 0;
  smooth_masks_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      params, weights, K, h, w, step, side, padding, coldness, Ho, Wo, out);
  return launched();
}

extern "C" int featvis_smooth_masks_backward_cuda(const float* grad, const float* params, const float* weights,
                                                  int64_t K, int64_t h, int64_t w, int64_t step, int64_t side,
                                                  int64_t padding, float coldness, int64_t Ho, int64_t Wo,
                                                  float* stats, float* grad_params, void* stream) {
  if (K * h * w == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (Ho * Wo > 0)
    mask_stats_kernel<<<blocks_for(K * Ho * Wo), kThreads, 0, s>>>(grad, params, weights, K, h, w, step, side,
                                                                    padding, coldness, Ho, Wo, stats);
  smooth_masks_backward_kernel<<<blocks_for(K * h * w), kThreads, 0, s>>>(params, weights, stats, K, h, w, step, side,
                                                                          padding, coldness, Ho, Wo, grad_params);
  return launched();
}

extern "C" int featvis_blend_levels_cuda(const float* pyramid, const float* masks, const int32_t* src, int64_t N,
                                         int64_t L, int64_t C, int64_t H, int64_t W, int complement, int flip,
                                         int nhwc, float* out, void* stream) {
  if (N * H * W == 0) return 0;
  blend_levels_kernel<<<blocks_for(N * H * W), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      pyramid, masks, src, N, L, C, H, W, complement, flip, nhwc, out);
  return launched();
}

extern "C" int featvis_blend_levels_backward_cuda(const float* grad, const float* pyramid, const float* masks,
                                                  const int32_t* src, int64_t N, int64_t L, int64_t C, int64_t H,
                                                  int64_t W, int complement, int flip, int nhwc, float* grad_masks,
                                                  void* stream) {
  if (N * H * W == 0) return 0;
  blend_levels_backward_kernel<<<blocks_for(N * H * W), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      grad, pyramid, masks, src, N, L, C, H, W, complement, flip, nhwc, grad_masks);
  return launched();
}
