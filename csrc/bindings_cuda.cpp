// Torch glue for the CUDA backend: argument checks, device guard and current stream, then the
// torch-free C ABIs of similarity_cuda.h (similarity_cuda.cu, similarity_int8_cuda.cu, colorize_cuda.cu)
// rectifier_cuda.h (rectifier_cuda.cu), perturbation_cuda.h (perturbation_cuda.cu), ascent_cuda.h
// (ascent_cuda.cu), dissection_cuda.h (dissection_cuda.cu), extremal_cuda.h (extremal_cuda.cu),
// lrp_cuda.h (lrp_cuda.cu) and patches_cuda.h (patches_cuda.cu).
// Built JIT as `featvis_cuda`.
#include <torch/extension.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "ascent_cuda.h"
#include "dissection_cuda.h"
#include "extremal_cuda.h"
#include "lrp_cuda.h"
#include "patches_cuda.h"
#include "perturbation_cuda.h"
#include "rectifier_cuda.h"
#include "similarity_cuda.h"

namespace {

void check_tensor(const at::Tensor& t, const char* name, const at::Device& device) {
  TORCH_CHECK(t.is_cuda(), "featvis_cuda: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == device, "featvis_cuda: ", name, " must be on ", device, ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "featvis_cuda: ", name, " must be contiguous");
}

void check_shape(const at::Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(t.scalar_type() == dtype, "featvis_cuda: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "featvis_cuda: ", name, " must have shape ", shape, ", got ", t.sizes());
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return FEATVIS_DTYPE_FLOAT32;
    case at::kHalf: return FEATVIS_DTYPE_FLOAT16;
    case at::kBFloat16: return FEATVIS_DTYPE_BFLOAT16;
    case at::kChar: return FEATVIS_DTYPE_INT8;
    default: break;
  }
  TORCH_CHECK(false, "featvis_cuda: features must be float32, float16, bfloat16 or int8, got ", t);
  return -1;
}

void* current_stream() { return static_cast<void*>(at::cuda::getCurrentCUDAStream().stream()); }

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

}  // namespace

// int8 storage: scales (N,) and query_scales (Q,) float32 are required (metric inner or angular);
// float storage: both must be None.
void pixel_similarity(const at::Tensor& features, const at::Tensor& queries, int64_t metric,
                      const std::optional<at::Tensor>& scales, const std::optional<at::Tensor>& query_scales,
                      const at::Tensor& sim_out, const at::Tensor& minmax_out) {
  const at::Device device = features.device();
  check_tensor(features, "features", device);
  check_tensor(queries, "queries", device);
  check_tensor(sim_out, "sim_out", device);
  check_tensor(minmax_out, "minmax_out", device);
  TORCH_CHECK(features.dim() == 2, "featvis_cuda: features must be (C, N), got ", features.sizes());
  TORCH_CHECK(queries.dim() == 2, "featvis_cuda: queries must be (Q, C), got ", queries.sizes());
  const int64_t C = features.size(0), N = features.size(1), Q = queries.size(0);
  TORCH_CHECK(queries.size(1) == C, "featvis_cuda: queries must be (Q, ", C, "), got ", queries.sizes());
  TORCH_CHECK(queries.scalar_type() == features.scalar_type(), "featvis_cuda: queries dtype ",
              queries.scalar_type(), " != features dtype ", features.scalar_type());
  const int dtype = dtype_code(features.scalar_type());
  TORCH_CHECK(metric >= FEATVIS_METRIC_INNER && metric <= FEATVIS_METRIC_EUCLIDEAN,
              "featvis_cuda: metric must be 0 (inner), 1 (angular) or 2 (euclidean), got ", metric);
  check_shape(sim_out, "sim_out", at::kFloat, {Q, N});
  check_shape(minmax_out, "minmax_out", at::kFloat, {Q, 2});
  TORCH_CHECK(C <= kInt32Max && N <= kInt32Max, "featvis_cuda: C and N must be < 2^31");

  const float* scales_ptr = nullptr;
  const float* query_scales_ptr = nullptr;
  if (dtype == FEATVIS_DTYPE_INT8) {
    TORCH_CHECK(metric != FEATVIS_METRIC_EUCLIDEAN, "featvis_cuda: euclidean is not supported with int8 storage");
    TORCH_CHECK(scales.has_value() && query_scales.has_value(),
                "featvis_cuda: int8 storage needs scales (N,) and query_scales (Q,)");
    check_tensor(*scales, "scales", device);
    check_tensor(*query_scales, "query_scales", device);
    check_shape(*scales, "scales", at::kFloat, {N});
    check_shape(*query_scales, "query_scales", at::kFloat, {Q});
    TORCH_CHECK(C <= FEATVIS_INT8_MAX_C, "featvis_cuda: int8 storage needs C <= ", FEATVIS_INT8_MAX_C,
                " (exact int32 sums), got ", C);
    scales_ptr = scales->data_ptr<float>();
    query_scales_ptr = query_scales->data_ptr<float>();
  } else {
    TORCH_CHECK(!scales.has_value() && !query_scales.has_value(),
                "featvis_cuda: scales / query_scales are only used with int8 storage, not ", features.scalar_type());
  }

  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_pixel_similarity_cuda(features.data_ptr(), queries.data_ptr(), scales_ptr, query_scales_ptr,
                                                C, N, Q, dtype, static_cast<int>(metric), sim_out.data_ptr<float>(),
                                                minmax_out.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: pixel_similarity failed: ", featvis_cuda_error_string(err));
}

void colorize(const at::Tensor& sim, const at::Tensor& lo, const at::Tensor& hi, const at::Tensor& lut,
              const at::Tensor& rgba_out) {
  const at::Device device = sim.device();
  check_tensor(sim, "sim", device);
  check_tensor(lo, "lo", device);
  check_tensor(hi, "hi", device);
  check_tensor(lut, "lut", device);
  check_tensor(rgba_out, "rgba_out", device);
  TORCH_CHECK(sim.dim() == 2, "featvis_cuda: sim must be (Q, N), got ", sim.sizes());
  const int64_t Q = sim.size(0), N = sim.size(1);
  check_shape(sim, "sim", at::kFloat, {Q, N});
  check_shape(lo, "lo", at::kFloat, {Q});
  check_shape(hi, "hi", at::kFloat, {Q});
  check_shape(lut, "lut", at::kByte, {256, 4});
  check_shape(rgba_out, "rgba_out", at::kByte, {Q, N, 4});
  TORCH_CHECK(N <= kInt32Max, "featvis_cuda: N must be < 2^31");

  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_colorize_cuda(sim.data_ptr<float>(), lo.data_ptr<float>(), hi.data_ptr<float>(),
                                        lut.data_ptr<uint8_t>(), rgba_out.data_ptr<uint8_t>(), Q, N,
                                        current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: colorize failed: ", featvis_cuda_error_string(err));
}

// Shared checks of the rectifier ops: `in` and `out` on one device, dense with equal strides, same float dtype
// and size; `packed` int32 on that device. Returns the dtype code.
int check_elementwise(const at::Tensor& in, const char* in_name, const at::Tensor& out, const at::Tensor& packed) {
  const at::Device device = in.device();
  // elementwise in memory order: any dense layout, shared by input and output
  for (const at::Tensor* t : {&in, &out}) {
    TORCH_CHECK(t->is_cuda() && t->device() == device, "featvis_cuda: rectifier tensors must be on ", device);
    TORCH_CHECK(t->is_non_overlapping_and_dense(), "featvis_cuda: rectifier tensors must be dense");
  }
  TORCH_CHECK(in.strides() == out.strides(), "featvis_cuda: output must have the same strides as ", in_name);
  check_tensor(packed, "packed", device);
  const auto s = in.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16, "featvis_cuda: ", in_name,
              " must be float32, float16 or bfloat16, got ", s);
  TORCH_CHECK(out.scalar_type() == s && out.numel() == in.numel(), "featvis_cuda: output must match ", in_name);
  TORCH_CHECK(packed.scalar_type() == at::kInt, "featvis_cuda: packed must be int32");
  return dtype_code(s);
}

// y_out may be x (in place); packed_out (0,) saves no mask.
void rectify(const at::Tensor& x, double lo, double hi, double slope, const at::Tensor& y_out,
             const at::Tensor& packed_out) {
  const int dtype = check_elementwise(x, "x", y_out, packed_out);
  const int64_t n = x.numel();
  const bool save = packed_out.numel() > 0;
  TORCH_CHECK(!save || packed_out.numel() == (n + 31) / 32, "featvis_cuda: packed_out must have ", (n + 31) / 32,
              " words (or 0), got ", packed_out.numel());
  const c10::cuda::CUDAGuard guard(x.device());
  const int err = featvis_rectify_cuda(x.data_ptr(), y_out.data_ptr(), save ? packed_out.data_ptr<int32_t>() : nullptr,
                                       n, dtype, static_cast<float>(lo), static_cast<float>(hi),
                                       static_cast<float>(slope), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: rectify failed: ", featvis_cuda_error_string(err));
}

void rectify_backward(const at::Tensor& grad, const at::Tensor& packed, int64_t rule, double slope,
                      const at::Tensor& dx_out) {
  const int dtype = check_elementwise(grad, "grad", dx_out, packed);
  const int64_t n = grad.numel();
  TORCH_CHECK(rule >= FEATVIS_RULE_BACKPROP && rule <= FEATVIS_RULE_GUIDED, "featvis_cuda: rule must be 0, 1 or 2");
  TORCH_CHECK(rule == FEATVIS_RULE_DECONVNET || packed.numel() == (n + 31) / 32, "featvis_cuda: packed must have ",
              (n + 31) / 32, " words, got ", packed.numel());
  const c10::cuda::CUDAGuard guard(grad.device());
  const int32_t* pp = rule == FEATVIS_RULE_DECONVNET ? nullptr : packed.data_ptr<int32_t>();
  const int err = featvis_rectify_backward_cuda(grad.data_ptr(), pp, dx_out.data_ptr(), n, dtype,
                                                static_cast<int>(rule), static_cast<float>(slope), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: rectify_backward failed: ", featvis_cuda_error_string(err));
}

// Shared checks of the perturbation image ops: x, fill contiguous (B, C, H, W) in memory order
// ((B, H, W, C) when nhwc), same float dtype; src (N,) int32; out (N, trailing dims of x) of x's dtype.
// Returns the dtype code; sets C, H, W. src values (and boxes) are validated by the op layer.
int check_images(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& src, bool nhwc, const at::Tensor& out,
                 int64_t& C, int64_t& H, int64_t& W) {
  const at::Device device = x.device();
  check_tensor(x, "x", device);
  check_tensor(fill, "fill", device);
  check_tensor(src, "src", device);
  check_tensor(out, "out", device);
  TORCH_CHECK(x.dim() == 4, "featvis_cuda: x must be 4-D, got ", x.sizes());
  const auto s = x.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16,
              "featvis_cuda: x must be float32, float16 or bfloat16, got ", s);
  check_shape(fill, "fill", s, x.sizes());
  TORCH_CHECK(src.dim() == 1, "featvis_cuda: src must be 1-D, got ", src.sizes());
  check_shape(src, "src", at::kInt, {src.size(0)});
  const int64_t N = src.size(0);
  check_shape(out, "out", s, {N, x.size(1), x.size(2), x.size(3)});
  C = nhwc ? x.size(3) : x.size(1);
  H = nhwc ? x.size(1) : x.size(2);
  W = nhwc ? x.size(2) : x.size(3);
  return dtype_code(s);
}

void check_boxes(const at::Tensor& boxes, int64_t n, const at::Device& device) {
  check_tensor(boxes, "boxes", device);
  check_shape(boxes, "boxes", at::kInt, {n, 6});
}

void occlude(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& src, const at::Tensor& boxes, bool nhwc,
             const at::Tensor& out) {
  int64_t C = 0, H = 0, W = 0;
  const int dtype = check_images(x, fill, src, nhwc, out, C, H, W);
  const int64_t N = src.size(0);
  check_boxes(boxes, N, x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int err = featvis_occlude_cuda(x.data_ptr(), fill.data_ptr(), src.data_ptr<int32_t>(),
                                       boxes.data_ptr<int32_t>(), N, C, H, W, nhwc ? 1 : 0, dtype, out.data_ptr(),
                                       current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: occlude failed: ", featvis_cuda_error_string(err));
}

void box_accumulate(const at::Tensor& values, const at::Tensor& src, const at::Tensor& boxes, const at::Tensor& sums,
                    const at::Tensor& counts) {
  const at::Device device = values.device();
  check_tensor(values, "values", device);
  check_tensor(src, "src", device);
  check_tensor(sums, "sums", device);
  check_tensor(counts, "counts", device);
  TORCH_CHECK(values.dim() == 1, "featvis_cuda: values must be 1-D, got ", values.sizes());
  const int64_t N = values.size(0);
  check_shape(values, "values", at::kFloat, {N});
  check_shape(src, "src", at::kInt, {N});
  check_boxes(boxes, N, device);
  TORCH_CHECK(sums.dim() == 4, "featvis_cuda: sums must be (B, P, H, W), got ", sums.sizes());
  check_shape(sums, "sums", at::kFloat, sums.sizes());
  check_shape(counts, "counts", at::kFloat, sums.sizes());
  for (int d = 0; d < 4; ++d)
    TORCH_CHECK(sums.size(d) <= kInt32Max, "featvis_cuda: sums dimensions must be < 2^31, got ", sums.sizes());
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_box_accumulate_cuda(values.data_ptr<float>(), src.data_ptr<int32_t>(),
                                              boxes.data_ptr<int32_t>(), N, sums.size(0), sums.size(1), sums.size(2),
                                              sums.size(3), sums.data_ptr<float>(), counts.data_ptr<float>(),
                                              current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: box_accumulate failed: ", featvis_cuda_error_string(err));
}

void rise_masks(const at::Tensor& grid, const at::Tensor& shifts, int64_t up_h, int64_t up_w, const at::Tensor& masks) {
  const at::Device device = grid.device();
  check_tensor(grid, "grid", device);
  check_tensor(shifts, "shifts", device);
  check_tensor(masks, "masks", device);
  TORCH_CHECK(grid.dim() == 3, "featvis_cuda: grid must be (N, s_h, s_w), got ", grid.sizes());
  const int64_t N = grid.size(0), grid_h = grid.size(1), grid_w = grid.size(2);
  check_shape(grid, "grid", at::kFloat, grid.sizes());
  check_shape(shifts, "shifts", at::kInt, {N, 2});
  TORCH_CHECK(masks.dim() == 3 && masks.size(0) == N, "featvis_cuda: masks must be (", N, ", H, W), got ",
              masks.sizes());
  check_shape(masks, "masks", at::kFloat, masks.sizes());
  const int64_t H = masks.size(1), W = masks.size(2);
  constexpr int64_t kMaxUp = int64_t(1) << 24;
  TORCH_CHECK(grid_h >= 1 && grid_w >= 1, "featvis_cuda: grid cells must be at least 1 x 1, got ", grid.sizes());
  TORCH_CHECK(up_h >= H && up_w >= W && up_h <= kMaxUp && up_w <= kMaxUp && grid_h <= kMaxUp && grid_w <= kMaxUp,
              "featvis_cuda: upsampled size (", up_h, ", ", up_w, ") must cover the masks (", H, ", ", W,
              ") and stay below 2^24");
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_rise_masks_cuda(grid.data_ptr<float>(), shifts.data_ptr<int32_t>(), N, grid_h, grid_w, up_h,
                                          up_w, H, W, masks.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: rise_masks failed: ", featvis_cuda_error_string(err));
}

void apply_masks(const at::Tensor& x, const at::Tensor& fill, const at::Tensor& masks, const at::Tensor& src, bool nhwc,
                 const at::Tensor& out) {
  int64_t C = 0, H = 0, W = 0;
  const int dtype = check_images(x, fill, src, nhwc, out, C, H, W);
  const int64_t N = src.size(0);
  check_tensor(masks, "masks", x.device());
  check_shape(masks, "masks", at::kFloat, {N, H, W});
  const c10::cuda::CUDAGuard guard(x.device());
  const int err = featvis_apply_masks_cuda(x.data_ptr(), fill.data_ptr(), masks.data_ptr<float>(),
                                           src.data_ptr<int32_t>(), N, C, H, W, nhwc ? 1 : 0, dtype, out.data_ptr(),
                                           current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: apply_masks failed: ", featvis_cuda_error_string(err));
}

// The extremal-perturbation ops (featvis_fast/ops/extremal.py): float32, contiguous, one device.
void check_f32(const at::Tensor& t, const char* name, const at::Device& device, int64_t dim) {
  check_tensor(t, name, device);
  TORCH_CHECK(t.scalar_type() == at::kFloat, "featvis_cuda: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "featvis_cuda: ", name, " must be ", dim, "-D, got ", t.sizes());
}

int64_t tap_side(const at::Tensor& weights) {
  TORCH_CHECK(weights.size(0) == weights.size(1), "featvis_cuda: weights must be (step, step, R*R)");
  int64_t side = 1;
  while (side * side < weights.size(2)) ++side;
  TORCH_CHECK(side * side == weights.size(2) && side % 2 == 1, "featvis_cuda: weights' last dimension must be R*R, R odd");
  return side;
}

void smooth_masks(const at::Tensor& params, const at::Tensor& weights, int64_t padding, double coldness,
                  const at::Tensor& out) {
  const at::Device device = params.device();
  check_f32(params, "params", device, 3);
  check_f32(weights, "weights", device, 3);
  check_f32(out, "out", device, 3);
  TORCH_CHECK(out.size(0) == params.size(0), "featvis_cuda: out must hold one mask per parameter grid");
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_smooth_masks_cuda(params.data_ptr<float>(), weights.data_ptr<float>(), params.size(0),
                                            params.size(1), params.size(2), weights.size(0), tap_side(weights),
                                            padding, static_cast<float>(coldness), out.size(1), out.size(2),
                                            out.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: smooth_masks failed: ", featvis_cuda_error_string(err));
}

void smooth_masks_backward(const at::Tensor& grad, const at::Tensor& params, const at::Tensor& weights,
                           int64_t padding, double coldness, const at::Tensor& grad_params) {
  const at::Device device = params.device();
  check_f32(grad, "grad", device, 3);
  check_f32(params, "params", device, 3);
  check_f32(weights, "weights", device, 3);
  check_f32(grad_params, "grad_params", device, 3);
  TORCH_CHECK(grad.size(0) == params.size(0) && grad_params.sizes() == params.sizes(),
              "featvis_cuda: grad must be (K, Ho, Wo) and grad_params shaped like params");
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor stats = at::empty({grad.size(0), 3, grad.size(1), grad.size(2)}, grad.options());
  const int err = featvis_smooth_masks_backward_cuda(
      grad.data_ptr<float>(), params.data_ptr<float>(), weights.data_ptr<float>(), params.size(0), params.size(1),
      params.size(2), weights.size(0), tap_side(weights), padding, static_cast<float>(coldness), grad.size(1),
      grad.size(2), stats.data_ptr<float>(), grad_params.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: smooth_masks_backward failed: ", featvis_cuda_error_string(err));
}

void check_blend(const at::Tensor& pyramid, const at::Tensor& masks, const at::Tensor& src, const at::Tensor& images,
                 bool nhwc, const char* name) {
  const at::Device device = pyramid.device();
  check_f32(pyramid, "pyramid", device, 5);
  check_f32(masks, "masks", device, 3);
  check_f32(images, name, device, 4);
  check_tensor(src, "src", device);
  const int64_t N = masks.size(0), C = pyramid.size(2), H = pyramid.size(3), W = pyramid.size(4);
  check_shape(src, "src", at::kInt, {N});
  check_shape(masks, "masks", at::kFloat, {N, H, W});
  if (nhwc)
    check_shape(images, name, at::kFloat, {N, H, W, C});
  else
    check_shape(images, name, at::kFloat, {N, C, H, W});
}

void blend_levels(const at::Tensor& pyramid, const at::Tensor& masks, const at::Tensor& src, bool complement, bool flip,
                  bool nhwc, const at::Tensor& out) {
  check_blend(pyramid, masks, src, out, nhwc, "out");
  const c10::cuda::CUDAGuard guard(pyramid.device());
  const int err = featvis_blend_levels_cuda(pyramid.data_ptr<float>(), masks.data_ptr<float>(), src.data_ptr<int32_t>(),
                                            masks.size(0), pyramid.size(1), pyramid.size(2), pyramid.size(3),
                                            pyramid.size(4), complement ? 1 : 0, flip ? 1 : 0, nhwc ? 1 : 0,
                                            out.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: blend_levels failed: ", featvis_cuda_error_string(err));
}

void blend_levels_backward(const at::Tensor& grad, const at::Tensor& pyramid, const at::Tensor& masks,
                           const at::Tensor& src, bool complement, bool flip, bool nhwc, const at::Tensor& grad_masks) {
  check_blend(pyramid, masks, src, grad, nhwc, "grad");
  check_f32(grad_masks, "grad_masks", pyramid.device(), 3);
  check_shape(grad_masks, "grad_masks", at::kFloat, masks.sizes());
  const c10::cuda::CUDAGuard guard(pyramid.device());
  const int err = featvis_blend_levels_backward_cuda(
      grad.data_ptr<float>(), pyramid.data_ptr<float>(), masks.data_ptr<float>(), src.data_ptr<int32_t>(),
      masks.size(0), pyramid.size(1), pyramid.size(2), pyramid.size(3), pyramid.size(4), complement ? 1 : 0,
      flip ? 1 : 0, nhwc ? 1 : 0, grad_masks.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: blend_levels_backward failed: ", featvis_cuda_error_string(err));
}

// The LRP ratio (featvis_fast/ops/lrp.py): float32, contiguous, one shape, one device.
void lrp_ratio(const at::Tensor& r, const at::Tensor& z1, const std::optional<at::Tensor>& z2, double eps,
               const at::Tensor& out) {
  const at::Device device = r.device();
  for (const at::Tensor* t : {&r, &z1, &out}) {
    check_tensor(*t, "r, z1 and out", device);
    check_shape(*t, "r, z1 and out", at::kFloat, r.sizes());
  }
  if (z2.has_value()) {
    check_tensor(*z2, "z2", device);
    check_shape(*z2, "z2", at::kFloat, r.sizes());
  }
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_lrp_ratio_cuda(r.data_ptr<float>(), z1.data_ptr<float>(),
                                         z2.has_value() ? z2->data_ptr<float>() : nullptr, r.numel(),
                                         static_cast<float>(eps), out.data_ptr<float>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: lrp_ratio failed: ", featvis_cuda_error_string(err));
}

// The fused gradient-ascent step (featvis_fast/ops/ascent.py): all tensors contiguous NCHW on one device;
// v and v_out (0,) for SGD. Offsets are validated by the op layer.
void ascent_step(const at::Tensor& x, const at::Tensor& g, const at::Tensor& offsets, const at::Tensor& scale,
                 const at::Tensor& m, const at::Tensor& v, const at::Tensor& next_offsets, int64_t step, double lr,
                 int64_t optimizer_code, double momentum, double beta1, double beta2, double eps, double l1, double l2,
                 double lp, double p, double tv, double beta, double tv_eps, double clip_lo, double clip_hi,
                 const at::Tensor& out, const at::Tensor& m_out, const at::Tensor& v_out, const at::Tensor& nxt) {
  const at::Device device = x.device();
  check_tensor(x, "x", device);
  check_tensor(g, "g", device);
  check_tensor(offsets, "offsets", device);
  check_tensor(scale, "scale", device);
  check_tensor(m, "m", device);
  check_tensor(v, "v", device);
  check_tensor(next_offsets, "next_offsets", device);
  check_tensor(out, "out", device);
  check_tensor(m_out, "m_out", device);
  check_tensor(v_out, "v_out", device);
  check_tensor(nxt, "nxt", device);
  TORCH_CHECK(x.dim() == 4, "featvis_cuda: x must be (N, C, H, W), got ", x.sizes());
  const auto s = x.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16,
              "featvis_cuda: x must be float32, float16 or bfloat16, got ", s);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(g.dim() == 4 && g.size(0) == N && g.size(1) == C && g.size(2) <= H && g.size(3) <= W,
              "featvis_cuda: g must be (", N, ", ", C, ", h <= ", H, ", w <= ", W, "), got ", g.sizes());
  check_shape(g, "g", at::kFloat, g.sizes());
  check_shape(offsets, "offsets", at::kInt, {N, 2});
  check_shape(next_offsets, "next_offsets", at::kInt, {N, 2});
  check_shape(scale, "scale", at::kFloat, {N});
  check_shape(m, "m", at::kFloat, x.sizes());
  check_shape(out, "out", s, x.sizes());
  check_shape(m_out, "m_out", at::kFloat, x.sizes());
  TORCH_CHECK(optimizer_code == FEATVIS_OPTIMIZER_SGD || optimizer_code == FEATVIS_OPTIMIZER_ADAM ||
                  optimizer_code == FEATVIS_OPTIMIZER_NESTEROV,
              "featvis_cuda: optimizer_code must be 0 (SGD), 1 (Adam) or 2 (Nesterov), got ", optimizer_code);
  const bool adam = optimizer_code == FEATVIS_OPTIMIZER_ADAM;
  if (adam) {
    check_shape(v, "v", at::kFloat, x.sizes());
    check_shape(v_out, "v_out", at::kFloat, x.sizes());
  } else {
    TORCH_CHECK(v.numel() == 0 && v_out.numel() == 0, "featvis_cuda: v and v_out must be empty for SGD and Nesterov");
  }
  TORCH_CHECK(nxt.dim() == 4 && nxt.size(0) == N && nxt.size(1) == C && nxt.size(2) >= 1 && nxt.size(2) <= H &&
                  nxt.size(3) >= 1 && nxt.size(3) <= W,
              "featvis_cuda: nxt must be (", N, ", ", C, ", crop_h <= ", H, ", crop_w <= ", W, "), got ", nxt.sizes());
  check_shape(nxt, "nxt", s, nxt.sizes());
  TORCH_CHECK(H <= kInt32Max && W <= kInt32Max, "featvis_cuda: H and W must be < 2^31");
  featvis_ascent_params params;
  params.optimizer = static_cast<int>(optimizer_code);
  params.step = step;
  params.lr = static_cast<float>(lr);
  params.momentum = static_cast<float>(momentum);
  params.beta1 = static_cast<float>(beta1);
  params.beta2 = static_cast<float>(beta2);
  params.eps = static_cast<float>(eps);
  params.l1 = static_cast<float>(l1);
  params.l2 = static_cast<float>(l2);
  params.lp = static_cast<float>(lp);
  params.p = static_cast<float>(p);
  params.tv = static_cast<float>(tv);
  params.beta = static_cast<float>(beta);
  params.tv_eps = static_cast<float>(tv_eps);
  params.clip_lo = static_cast<float>(clip_lo);
  params.clip_hi = static_cast<float>(clip_hi);
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_ascent_step_cuda(
      x.data_ptr(), g.data_ptr<float>(), offsets.data_ptr<int32_t>(), scale.data_ptr<float>(), m.data_ptr<float>(),
      adam ? v.data_ptr<float>() : nullptr, next_offsets.data_ptr<int32_t>(), N, C, H, W, g.size(2), g.size(3),
      nxt.size(2), nxt.size(3), dtype_code(s), &params, out.data_ptr(), m_out.data_ptr<float>(),
      adam ? v_out.data_ptr<float>() : nullptr, nxt.data_ptr(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: ascent_step failed: ", featvis_cuda_error_string(err));
}

// The Network Dissection tally (featvis_fast/ops/dissection.py): acts (B, U, h, w) f32, thresholds (U,) f64,
// labels (B, K, H, W) u8, annotated (B, K) u8; writes intersection, unit_area (U, K) and label_area (K,) int64.
void dissect_tally(const at::Tensor& acts, const at::Tensor& thresholds, const at::Tensor& labels,
                   const at::Tensor& annotated, const at::Tensor& intersection, const at::Tensor& unit_area,
                   const at::Tensor& label_area) {
  const at::Device device = acts.device();
  check_tensor(acts, "acts", device);
  check_tensor(thresholds, "thresholds", device);
  check_tensor(labels, "labels", device);
  check_tensor(annotated, "annotated", device);
  check_tensor(intersection, "intersection", device);
  check_tensor(unit_area, "unit_area", device);
  check_tensor(label_area, "label_area", device);
  TORCH_CHECK(acts.dim() == 4, "featvis_cuda: acts must be (B, U, h, w), got ", acts.sizes());
  TORCH_CHECK(labels.dim() == 4, "featvis_cuda: labels must be (B, K, H, W), got ", labels.sizes());
  const int64_t B = acts.size(0), U = acts.size(1), h = acts.size(2), w = acts.size(3);
  const int64_t K = labels.size(1), H = labels.size(2), W = labels.size(3);
  check_shape(acts, "acts", at::kFloat, acts.sizes());
  check_shape(thresholds, "thresholds", at::kDouble, {U});
  check_shape(labels, "labels", at::kByte, {B, K, H, W});
  check_shape(annotated, "annotated", at::kByte, {B, K});
  check_shape(intersection, "intersection", at::kLong, {U, K});
  check_shape(unit_area, "unit_area", at::kLong, {U, K});
  check_shape(label_area, "label_area", at::kLong, {K});
  TORCH_CHECK(h >= 1 && w >= 1 && H >= 1 && W >= 1, "featvis_cuda: activation and label maps must be at least 1x1");
  TORCH_CHECK(H * W <= kInt32Max && B * K <= kInt32Max && U <= kInt32Max,
              "featvis_cuda: H * W, B * K and U must be < 2^31");
  const c10::cuda::CUDAGuard guard(device);
  const at::Tensor workspace =
      at::empty({featvis_dissect_tally_workspace_bytes(B, K, H, W)}, acts.options().dtype(at::kByte));
  const int err = featvis_dissect_tally_cuda(
      acts.data_ptr<float>(), thresholds.data_ptr<double>(), labels.data_ptr<uint8_t>(), annotated.data_ptr<uint8_t>(),
      B, U, h, w, K, H, W, workspace.data_ptr(), intersection.data_ptr<int64_t>(), unit_area.data_ptr<int64_t>(),
      label_area.data_ptr<int64_t>(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: dissect_tally failed: ", featvis_cuda_error_string(err));
}

// base (B, C, H, W) contiguous in memory order ((B, H, W, C) when nhwc), float32/float16/bfloat16; patches
// (N, C, ph, pw) (or (N, ph, pw, C)) and out (N, C, tile_h, tile_w) (or (N, tile_h, tile_w, C)) likewise;
// src (N,) int32; corners (N, 4) int32. src values and patch boxes are validated by the op layer.
void gather_patches(const at::Tensor& base, const at::Tensor& src, const at::Tensor& corners,
                    const at::Tensor& patches, double pad, bool nhwc, const at::Tensor& out) {
  const at::Device device = base.device();
  check_tensor(base, "base", device);
  check_tensor(src, "src", device);
  check_tensor(corners, "corners", device);
  check_tensor(patches, "patches", device);
  check_tensor(out, "out", device);
  TORCH_CHECK(base.dim() == 4 && patches.dim() == 4 && out.dim() == 4,
              "featvis_cuda: base, patches and out must be 4-D, got ", base.sizes(), ", ", patches.sizes(), ", ",
              out.sizes());
  const auto s = base.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16,
              "featvis_cuda: base must be float32, float16 or bfloat16, got ", s);
  TORCH_CHECK(src.dim() == 1, "featvis_cuda: src must be 1-D, got ", src.sizes());
  const int64_t N = src.size(0);
  check_shape(src, "src", at::kInt, {N});
  check_shape(corners, "corners", at::kInt, {N, 4});
  const int64_t B = base.size(0);
  const int64_t C = nhwc ? base.size(3) : base.size(1), H = nhwc ? base.size(1) : base.size(2),
                W = nhwc ? base.size(2) : base.size(3);
  const int64_t PH = nhwc ? patches.size(1) : patches.size(2), PW = nhwc ? patches.size(2) : patches.size(3);
  const int64_t TH = nhwc ? out.size(1) : out.size(2), TW = nhwc ? out.size(2) : out.size(3);
  using Shape = std::vector<int64_t>;
  const Shape patches_shape = nhwc ? Shape{N, PH, PW, C} : Shape{N, C, PH, PW};
  const Shape out_shape = nhwc ? Shape{N, TH, TW, C} : Shape{N, C, TH, TW};
  check_shape(patches, "patches", s, patches_shape);
  check_shape(out, "out", s, out_shape);
  const c10::cuda::CUDAGuard guard(device);
  const int err = featvis_gather_patches_cuda(base.data_ptr(), src.data_ptr<int32_t>(), corners.data_ptr<int32_t>(),
                                              patches.data_ptr(), N, B, C, H, W, PH, PW, TH, TW, pad, nhwc ? 1 : 0,
                                              dtype_code(s), out.data_ptr(), current_stream());
  TORCH_CHECK(err == 0, "featvis_cuda: gather_patches failed: ", featvis_cuda_error_string(err));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pixel_similarity", &pixel_similarity,
        "sim_out[q, n] = metric(features[:, n], queries[q]) (int8: exact int32 sum * scales[n] * query_scales[q]); "
        "minmax_out[q] = (min, max) of sim_out[q]",
        py::arg("features"), py::arg("queries"), py::arg("metric"), py::arg("scales"), py::arg("query_scales"),
        py::arg("sim_out"), py::arg("minmax_out"));
  m.def("colorize", &colorize, "rgba_out[q, n] = lut[index of sim[q, n] in [lo[q], hi[q]]]", py::arg("sim"),
        py::arg("lo"), py::arg("hi"), py::arg("lut"), py::arg("rgba_out"));
  m.def("rectify", &rectify, "y = rectifier(x), packed mask bits lo < x < hi (warp ballots)", py::arg("x"),
        py::arg("lo"), py::arg("hi"), py::arg("slope"), py::arg("y_out"), py::arg("packed_out"));
  m.def("rectify_backward", &rectify_backward, "dx = g * (f(m) * d(g)) from the packed mask", py::arg("grad"),
        py::arg("packed"), py::arg("rule"), py::arg("slope"), py::arg("dx_out"));
  m.def("occlude", &occlude,
        "out[n] = x[src[n]] with fill[src[n]] inside boxes[n] = (y0, y1, x0, x1, c0, c1); memory order NCHW "
        "or NHWC (nhwc)",
        py::arg("x"), py::arg("fill"), py::arg("src"), py::arg("boxes"), py::arg("nhwc"), py::arg("out"));
  m.def("box_accumulate", &box_accumulate,
        "sums/counts (B, P, H, W) = per-pixel sum of values[n] / number of boxes[n] on image src[n] (gather)",
        py::arg("values"), py::arg("src"), py::arg("boxes"), py::arg("sums"), py::arg("counts"));
  m.def("rise_masks", &rise_masks,
        "masks[n] = bilinear (align_corners=False) upsampling of grid[n] to (up_h, up_w), cropped at shifts[n]",
        py::arg("grid"), py::arg("shifts"), py::arg("up_h"), py::arg("up_w"), py::arg("masks"));
  m.def("apply_masks", &apply_masks, "out[n] = x[src[n]] * masks[n] + fill[src[n]] * (1 - masks[n]) (fp32)",
        py::arg("x"), py::arg("fill"), py::arg("masks"), py::arg("src"), py::arg("nhwc"), py::arg("out"));
  m.def("ascent_step", &ascent_step,
        "one fused gradient-ascent step (SGD, Adam or Nesterov, l1/l2/lp/beta-TV regularizers, clip): writes out, "
        "m_out, v_out (Adam) and nxt = out cropped at next_offsets",
        py::arg("x"), py::arg("g"), py::arg("offsets"), py::arg("scale"), py::arg("m"), py::arg("v"),
        py::arg("next_offsets"), py::arg("step"), py::arg("lr"), py::arg("optimizer_code"), py::arg("momentum"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("l1"), py::arg("l2"), py::arg("lp"), py::arg("p"),
        py::arg("tv"), py::arg("beta"), py::arg("tv_eps"), py::arg("clip_lo"), py::arg("clip_hi"), py::arg("out"),
        py::arg("m_out"), py::arg("v_out"), py::arg("nxt"));
  m.def("dissect_tally", &dissect_tally,
        "Network Dissection tally: m = bilinear float64 upsampling of acts[b,u] to (H,W) > thresholds[u]; over "
        "images with annotated[b,k]: intersection[u,k] += |m & labels[b,k]|, unit_area[u,k] += |m|, "
        "label_area[k] += |labels[b,k]| (int64, exact)",
        py::arg("acts"), py::arg("thresholds"), py::arg("labels"), py::arg("annotated"), py::arg("intersection"),
        py::arg("unit_area"), py::arg("label_area"));
  m.def("smooth_masks", &smooth_masks, "smooth extremal-perturbation masks from their parameters (fp32)",
        py::arg("params"), py::arg("weights"), py::arg("padding"), py::arg("coldness"), py::arg("out"));
  m.def("smooth_masks_backward", &smooth_masks_backward, "d(sum grad * smooth_masks)/d params (fp32)",
        py::arg("grad"), py::arg("params"), py::arg("weights"), py::arg("padding"), py::arg("coldness"),
        py::arg("grad_params"));
  m.def("blend_levels", &blend_levels, "perturbed copies interpolated between pyramid levels by masks (fp32)",
        py::arg("pyramid"), py::arg("masks"), py::arg("src"), py::arg("complement"), py::arg("flip"), py::arg("nhwc"),
        py::arg("out"));
  m.def("blend_levels_backward", &blend_levels_backward, "d(sum grad * blend_levels)/d masks (fp32)",
        py::arg("grad"), py::arg("pyramid"), py::arg("masks"), py::arg("src"), py::arg("complement"), py::arg("flip"),
        py::arg("nhwc"), py::arg("grad_masks"));
  m.def("lrp_ratio", &lrp_ratio, "r / (z1 + z2 + eps * sign) (fp32)", py::arg("r"), py::arg("z1"), py::arg("z2"),
        py::arg("eps"), py::arg("out"));
  m.def("gather_patches", &gather_patches,
        "out[n] = the tile of base[src[n]] at corners[n] (tile_y, tile_x) with patches[n] pasted in at (patch_y, "
        "patch_x), pad outside the map; memory order NCHW or NHWC (nhwc), an exact copy",
        py::arg("base"), py::arg("src"), py::arg("corners"), py::arg("patches"), py::arg("pad"), py::arg("nhwc"),
        py::arg("out"));
}
