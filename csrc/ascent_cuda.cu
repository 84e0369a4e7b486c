// featvis-fast CUDA kernel of the fused gradient-ascent step (C ABI: ascent_cuda.h).
// A 2-D grid: blockIdx.y walks the (n, c) planes, blockIdx.x a grid-stride loop over the pixels of
// one plane. Each thread reads x at its pixel and the six neighbours the beta-TV gradient needs
// (the rows above and below are neighbours in the plane, so they mostly hit L1/L2), the objective
// gradient of the previous crop (0 outside it, times scale[n]) and the optimizer state, and writes
// the new image, the new state and, when the pixel falls inside the next jittered crop, its place
// there. Regularizer, optimizer and clip choices are uniform branches. fp32 arithmetic without FMA
// contraction (_rn intrinsics, IEEE division and square root); powers via powf.
#include "ascent_cuda.h"
#include "featvis_abi.h"
#include "cuda_convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocksX = 65535 * 4;
constexpr int64_t kMaxBlocksY = 65535;
constexpr int64_t kInt32Index = 1 << 30;  // below this, per-plane offsets (plus a grid stride) fit int32

using featvis::cuda::from_float;
using featvis::cuda::to_float;

// The step's fp32 coefficients, formed on the host as the reference forms them.
struct Coeffs {
  float lr, momentum, beta1, one_m_beta1, beta2, one_m_beta2, bias1, bias2, eps;
  float l1, l2x2, lpp, lp_exp, tv, beta, tv_eps, tv_exp, clip_lo, clip_hi;
  bool adam, nesterov, use_l1, use_l2, use_lp, use_tv, clip;
};

__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }

// torch.sign: -1, 0 (keeping the zero's sign) or 1; NaN passes.
__device__ __forceinline__ float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : v); }

// beta * (a^2 + b^2 + tv_eps)^(beta / 2 - 1)
__device__ __forceinline__ float tv_weight(float a, float b, const Coeffs& k) {
  return mul(k.beta, powf(add(add(mul(a, a), mul(b, b)), k.tv_eps), k.tv_exp));
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
ascent_kernel(const T* __restrict__ x, const float* __restrict__ g, const int32_t* __restrict__ offsets,
              const float* __restrict__ scale, const float* __restrict__ m, const float* __restrict__ v,
              const int32_t* __restrict__ next_offsets, int64_t planes, int64_t C, I H, I W, I gh, I gw, I ch, I cw,
              const Coeffs k, T* __restrict__ out, float* __restrict__ m_out, float* __restrict__ v_out,
              T* __restrict__ nxt) {
  const I plane = H * W;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (int64_t pl = blockIdx.y; pl < planes; pl += gridDim.y) {
    const int64_t n = pl / C;
    const I dy = static_cast<I>(__ldg(offsets + 2 * n)), dx = static_cast<I>(__ldg(offsets + 2 * n + 1));
    const I ny = static_cast<I>(__ldg(next_offsets + 2 * n)), nx = static_cast<I>(__ldg(next_offsets + 2 * n + 1));
    const float s = __ldg(scale + n);
    const int64_t base = pl * static_cast<int64_t>(plane);
    const T* xs = x + base;
    const float* gs = g + pl * static_cast<int64_t>(gh) * gw;
    for (I off = static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x); off < plane; off += stride) {
      const I i = off / W, j = off % W;
      const float xc = to_float<T>(xs[off]);

      const I gi = i - dy, gj = j - dx;
      const bool in_g = gi >= 0 && gi < gh && gj >= 0 && gj < gw;
      float d = mul(in_g ? __ldg(gs + gi * gw + gj) : 0.0f, s);

      // the regularizers' gradient, accumulated in the reference's order
      float reg = 0.0f;
      const float sg = sign_of(xc);
      if (k.use_l1) reg = add(reg, mul(k.l1, sg));
      if (k.use_l2) reg = add(reg, mul(k.l2x2, xc));
      if (k.use_lp) reg = add(reg, mul(mul(k.lpp, powf(fabsf(xc), k.lp_exp)), sg));
      if (k.use_tv) {
        const bool last_row = i == H - 1, last_col = j == W - 1;
        // this pixel's differences
        const float a = last_row ? 0.0f : sub(to_float<T>(xs[off + W]), xc);
        const float b = last_col ? 0.0f : sub(to_float<T>(xs[off + 1]), xc);
        const float w = tv_weight(a, b, k);
        float t = -add(mul(w, a), mul(w, b));
        if (i > 0) {  // the pixel above: its a ends here
          const float up = to_float<T>(xs[off - W]);
          const float a_up = sub(xc, up);
          const float b_up = last_col ? 0.0f : sub(to_float<T>(xs[off - W + 1]), up);
          t = add(t, mul(tv_weight(a_up, b_up, k), a_up));
        }
        if (j > 0) {  // the pixel to the left: its b ends here
          const float left = to_float<T>(xs[off - 1]);
          const float b_left = sub(xc, left);
          const float a_left = last_row ? 0.0f : sub(to_float<T>(xs[off + W - 1]), left);
          t = add(t, mul(tv_weight(a_left, b_left, k), b_left));
        }
        reg = add(reg, mul(k.tv, t));
      }
      d = sub(d, reg);

      const float mv = m[base + off];
      float m_new, step;
      if (k.adam) {
        const float vv = v[base + off];
        m_new = add(mul(k.beta1, mv), mul(k.one_m_beta1, d));
        const float v_new = add(mul(k.beta2, vv), mul(mul(k.one_m_beta2, d), d));
        step = __fdiv_rn(mul(k.lr, __fdiv_rn(m_new, k.bias1)), add(__fsqrt_rn(__fdiv_rn(v_new, k.bias2)), k.eps));
        v_out[base + off] = v_new;
      } else {
        m_new = add(mul(k.momentum, mv), d);
        step = mul(k.lr, k.nesterov ? add(d, mul(k.momentum, m_new)) : m_new);
      }
      m_out[base + off] = m_new;
      float xn = add(xc, step);
      if (k.clip) xn = fminf(fmaxf(xn, k.clip_lo), k.clip_hi);
      const T xo = from_float<T>(xn);
      out[base + off] = xo;

      const I ci = i - ny, cj = j - nx;
      if (ci >= 0 && ci < ch && cj >= 0 && cj < cw) nxt[pl * static_cast<int64_t>(ch) * cw + ci * cw + cj] = xo;
    }
  }
}

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocksX ? (blocks > 0 ? blocks : 1) : kMaxBlocksX);
}

template <typename T, typename I>
int launch(const void* x, const float* g, const int32_t* offsets, const float* scale, const float* m, const float* v,
           const int32_t* next_offsets, int64_t N, int64_t C, int64_t H, int64_t W, int64_t h, int64_t w,
           int64_t crop_h, int64_t crop_w, const Coeffs& k, void* out, float* m_out, float* v_out, void* nxt,
           cudaStream_t stream) {
  const int64_t planes = N * C;
  const dim3 grid(static_cast<unsigned>(blocks_for(H * W)),
                  static_cast<unsigned>(planes < kMaxBlocksY ? planes : kMaxBlocksY));
  ascent_kernel<T, I><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(x), g, offsets, scale, m, v, next_offsets, planes, C, static_cast<I>(H),
      static_cast<I>(W), static_cast<I>(h), static_cast<I>(w), static_cast<I>(crop_h), static_cast<I>(crop_w), k,
      static_cast<T*>(out), m_out, v_out, static_cast<T*>(nxt));
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int dispatch(const void* x, const float* g, const int32_t* offsets, const float* scale, const float* m,
             const float* v, const int32_t* next_offsets, int64_t N, int64_t C, int64_t H, int64_t W, int64_t h,
             int64_t w, int64_t crop_h, int64_t crop_w, const Coeffs& k, void* out, float* m_out, float* v_out,
             void* nxt, cudaStream_t stream) {
  if (H * W < kInt32Index)
    return launch<T, int32_t>(x, g, offsets, scale, m, v, next_offsets, N, C, H, W, h, w, crop_h, crop_w, k, out,
                              m_out, v_out, nxt, stream);
  return launch<T, int64_t>(x, g, offsets, scale, m, v, next_offsets, N, C, H, W, h, w, crop_h, crop_w, k, out, m_out,
                            v_out, nxt, stream);
}

}  // namespace

extern "C" int featvis_ascent_step_cuda(const void* x, const float* g, const int32_t* offsets, const float* scale,
                                        const float* m, const float* v, const int32_t* next_offsets, int64_t N,
                                        int64_t C, int64_t H, int64_t W, int64_t h, int64_t w, int64_t crop_h,
                                        int64_t crop_w, int dtype, const featvis_ascent_params* params, void* out,
                                        float* m_out, float* v_out, void* nxt, void* stream) {
  if (params == nullptr || N < 0 || C < 0 || H < 0 || W < 0 || h < 0 || h > H || w < 0 || w > W || crop_h < 0 ||
      crop_h > H || crop_w < 0 || crop_w > W)
    return static_cast<int>(cudaErrorInvalidValue);
  const bool adam = params->optimizer == FEATVIS_OPTIMIZER_ADAM;
  const bool nesterov = params->optimizer == FEATVIS_OPTIMIZER_NESTEROV;
  if (!adam && !nesterov && params->optimizer != FEATVIS_OPTIMIZER_SGD)
    return static_cast<int>(cudaErrorInvalidValue);
  if (N * C == 0 || H * W == 0) return 0;
  if (adam && (v == nullptr || v_out == nullptr)) return static_cast<int>(cudaErrorInvalidValue);

  // host scalars as the reference forms them: Python-double arithmetic, then fp32
  const double b1 = params->beta1, b2 = params->beta2, p = params->p, beta = params->beta;
  Coeffs k;
  k.lr = params->lr;
  k.momentum = params->momentum;
  k.beta1 = params->beta1;
  k.one_m_beta1 = static_cast<float>(1.0 - b1);
  k.beta2 = params->beta2;
  k.one_m_beta2 = static_cast<float>(1.0 - b2);
  k.bias1 = adam ? static_cast<float>(1.0 - pow(b1, static_cast<double>(params->step))) : 1.0f;
  k.bias2 = adam ? static_cast<float>(1.0 - pow(b2, static_cast<double>(params->step))) : 1.0f;
  k.eps = params->eps;
  k.l1 = params->l1;
  k.l2x2 = static_cast<float>(2.0 * static_cast<double>(params->l2));
  k.lpp = static_cast<float>(static_cast<double>(params->lp) * p);
  k.lp_exp = static_cast<float>(p - 1.0);
  k.tv = params->tv;
  k.beta = params->beta;
  k.tv_eps = params->tv_eps;
  k.tv_exp = static_cast<float>(beta / 2.0 - 1.0);
  k.clip_lo = params->clip_lo;
  k.clip_hi = params->clip_hi;
  k.adam = adam;
  k.nesterov = nesterov;
  k.use_l1 = params->l1 != 0.0f;
  k.use_l2 = params->l2 != 0.0f;
  k.use_lp = params->lp != 0.0f;
  k.use_tv = params->tv != 0.0f;
  k.clip = params->clip_lo <= params->clip_hi;

  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32:
      return dispatch<float>(x, g, offsets, scale, m, v, next_offsets, N, C, H, W, h, w, crop_h, crop_w, k, out,
                             m_out, v_out, nxt, s);
    case FEATVIS_DTYPE_FLOAT16:
      return dispatch<__half>(x, g, offsets, scale, m, v, next_offsets, N, C, H, W, h, w, crop_h, crop_w, k, out,
                              m_out, v_out, nxt, s);
    case FEATVIS_DTYPE_BFLOAT16:
      return dispatch<__nv_bfloat16>(x, g, offsets, scale, m, v, next_offsets, N, C, H, W, h, w, crop_h, crop_w, k,
                                     out, m_out, v_out, nxt, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
