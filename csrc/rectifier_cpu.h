// featvis-fast: CPU kernels for the rectifier rules (semantics: featvis_fast/_rectifier_reference.py).
//
//   rectify(x, lo, hi, slope, y_out, packed_out)       y_out may be x itself (in-place);
//                                                      packed_out (0,) int32 saves no mask
//   rectify_backward(grad, packed, rule, slope, dx_out)
//
// x / y_out and grad / dx_out: dense tensors of one layout, processed in memory order (the mask
// follows that order). Masks are packed one bit per element, LSB first, 32 elements per int32 word. Work is split
// over blocks of words with at::parallel_for; each word's 32 elements are computed in fp32
// (fp16/bf16 widened exactly) and rounded once on store. No FMA: every backend rounds alike.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "featvis_abi.h"

namespace featvis::cpu {

constexpr int64_t kRuleBackprop = FEATVIS_RULE_BACKPROP;
constexpr int64_t kRuleDeconvnet = FEATVIS_RULE_DECONVNET;
constexpr int64_t kRuleGuided = FEATVIS_RULE_GUIDED;

void rectify(const at::Tensor& x, double lo, double hi, double slope, const at::Tensor& y_out,
             const at::Tensor& packed_out);

void rectify_backward(const at::Tensor& grad, const at::Tensor& packed, int64_t rule, double slope,
                      const at::Tensor& dx_out);

}  // namespace featvis::cpu
