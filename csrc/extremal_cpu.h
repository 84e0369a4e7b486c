// featvis-fast: CPU kernels for the extremal-perturbation ops; semantics:
// featvis_fast/_extremal_reference.py (Fong et al. 2019, TorchRay's MaskGenerator / Perturbation).
//
//   smooth_masks(params, weights, padding, coldness, out)
//       out[k, u] = clamp(sum_t v_t softmax_t(coldness v), 0, 1),
//       v_t = weights[uy % s, ux % s, t] * params[k, uy / s + ty - padding, ux / s + tx - padding] (0 outside)
//   smooth_masks_backward(grad, params, weights, padding, coldness, grad_params)
//       grad_params = d(sum grad * out)/d params (recomputes the forward; clamp passes 0 <= pooled <= 1)
//   blend_levels(pyramid, masks, src, complement, flip, nhwc, out)
//       out[n, c, y, x] = (1 - f) y_k + f y_{min(k+1, L-1)} at column x' (x' = W-1-x when flip),
//       w = m (L-1) with m = masks[n, y, x'] (1 - it when complement), k = floor(w), f = w - k
//   blend_levels_backward(grad, pyramid, masks, src, complement, flip, nhwc, grad_masks)
//       grad_masks[n, y, x'] = +-(L-1) sum_c grad[n, c, y, x] (y_{k+1} - y_k)
//
// params (K, h, w), weights (s, s, R*R), out / grad (K, Ho, Wo), pyramid (B, L, C, H, W), masks
// (N, H, W), src (N,) int32; out / grad of the blend (N, C, H, W) or (N, H, W, C) in memory when
// nhwc. float32, contiguous. One smooth-mask pixel's softmax runs over its R*R taps with a
// vectorizable exp (Cephes' polynomial, about 1 ulp); parameters of one step x step cell are
// gathered once per cell. Work: at::parallel_for over rows of cells (forward) or masks (backward).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace featvis::cpu {

void smooth_masks(const at::Tensor& params, const at::Tensor& weights, int64_t padding, double coldness,
                  at::Tensor& out);

void smooth_masks_backward(const at::Tensor& grad, const at::Tensor& params, const at::Tensor& weights,
                           int64_t padding, double coldness, at::Tensor& grad_params);

void blend_levels(const at::Tensor& pyramid, const at::Tensor& masks, const at::Tensor& src, bool complement,
                  bool flip, bool nhwc, at::Tensor& out);

void blend_levels_backward(const at::Tensor& grad, const at::Tensor& pyramid, const at::Tensor& masks,
                           const at::Tensor& src, bool complement, bool flip, bool nhwc, at::Tensor& grad_masks);

}  // namespace featvis::cpu
