// featvis-fast: CPU kernel of the fused gradient-ascent step (semantics: featvis_fast/_ascent_reference.py;
// op layer and calling convention: featvis_fast/ops/ascent.py).
//
//   ascent_step(x, g, offsets, scale, m, v, next_offsets, step, lr, optimizer_code, momentum, beta1, beta2,
//               eps, l1, l2, lp, p, tv, beta, tv_eps, clip_lo, clip_hi, out, m_out, v_out, nxt)
//
// All tensors contiguous NCHW on the CPU. x (N,C,H,W) f32/f16/bf16; g (N,C,h,w) f32 is the objective's
// gradient of the crop at offsets (N,2) int32 (dy,dx) (zero outside it), times scale (N,) f32 per image;
// m, m_out (N,C,H,W) f32; v, v_out likewise for Adam (optimizer_code 1), empty tensors for SGD (0) and
// Nesterov (2).
//   d  = g * scale - R'(x)      R' = gradient of the l1 / l2 / alpha-norm / beta-TV regularizers
//   SGD:  m' = momentum m + d;  x' = x + lr m'
//   Nesterov: m' = momentum m + d;  x' = x + lr (d + momentum m')
//   Adam: m' = b1 m + (1-b1) d;  v' = b2 v + (1-b2) d^2;  x' = x + lr (m'/(1-b1^t)) / (sqrt(v'/(1-b2^t)) + eps)
//   x' clamped to [clip_lo, clip_hi] when clip_lo <= clip_hi; out = x' rounded once to x's dtype;
//   nxt (N,C,ch,cw) x dtype = out cropped at next_offsets.
// Arithmetic in fp32; regularizers with weight 0 are skipped. Every output element is written once;
// outputs must not alias inputs (TV reads neighbouring rows of x). Work is split over (n, c, row) blocks.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "featvis_abi.h"

namespace featvis::cpu {

constexpr int64_t kOptimizerSgd = FEATVIS_OPTIMIZER_SGD;
constexpr int64_t kOptimizerAdam = FEATVIS_OPTIMIZER_ADAM;
constexpr int64_t kOptimizerNesterov = FEATVIS_OPTIMIZER_NESTEROV;

void ascent_step(const at::Tensor& x, const at::Tensor& g, const at::Tensor& offsets, const at::Tensor& scale,
                 const at::Tensor& m, const at::Tensor& v, const at::Tensor& next_offsets, int64_t step, double lr,
                 int64_t optimizer_code, double momentum, double beta1, double beta2, double eps, double l1,
                 double l2, double lp, double p, double tv, double beta, double tv_eps, double clip_lo,
                 double clip_hi, const at::Tensor& out, const at::Tensor& m_out, const at::Tensor& v_out,
                 const at::Tensor& nxt);

}  // namespace featvis::cpu
