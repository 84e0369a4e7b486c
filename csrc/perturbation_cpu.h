// featvis-fast: CPU kernels for the perturbation ops (occlusion, RISE); semantics:
// featvis_fast/_perturbation_reference.py.
//
//   occlude(x, fill, src, boxes, nhwc, out)         out[n] = x[src[n]], fill[src[n]] inside boxes[n]
//   box_accumulate(values, src, boxes, sums, counts) sums/counts[src[n], box] += values[n] / 1
//   rise_masks(grid, shifts, up_h, up_w, masks)     torch's bilinear upsample (align_corners=False) + crop
//   apply_masks(x, fill, masks, src, nhwc, out)     out[n] = x[src[n]] * m + fill[src[n]] * (1 - m)
//
// x, fill and out are contiguous in memory order: (B, C, H, W), or (B, H, W, C) when nhwc;
// f32/f16/bf16 (16-bit values are widened exactly, computed in fp32, rounded once on store).
// src (N,) int32 picks the image of each output; boxes (N, 6) int32 are half-open
// (y0, y1, x0, x1, c0, c1). Every output element is written exactly once (sums/counts are
// zeroed here). box_accumulate adds in fp32 in index order n, so it is deterministic.
// Work is split with at::parallel_for over output rows (or masks, for rise_masks).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace featvis::cpu {

void occlude(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& src, const at::Tensor& boxes,
             bool nhwc, at::Tensor& out);

void box_accumulate(const at::Tensor& values, const at::Tensor& src, const at::Tensor& boxes, at::Tensor& sums,
                    at::Tensor& counts);

void rise_masks(const at::Tensor& grid, const at::Tensor& shifts, int64_t up_h, int64_t up_w, at::Tensor& masks);

void apply_masks(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& masks, const at::Tensor& src,
                 bool nhwc, at::Tensor& out);

}  // namespace featvis::cpu
