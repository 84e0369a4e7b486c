// Python bindings for every featvis-fast C++ CPU kernel (the *_cpu.h headers) and the CPU memory cache.
#include <torch/extension.h>

#include "ascent_cpu.h"
#include "cpu_cache.h"
#include "dissection_cpu.h"
#include "extremal_cpu.h"
#include "lrp_cpu.h"
#include "patches_cpu.h"
#include "perturbation_cpu.h"
#include "rectifier_cpu.h"
#include "similarity_cpu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "featvis-fast CPU kernels: pixel similarity, LUT colorization, rectifier rules, perturbations, "
          "gradient-ascent step, Network Dissection tally, extremal-perturbation masks, LRP ratio, patch gather";
  m.def("pixel_similarity", &featvis::cpu::pixel_similarity,
        "pixel_similarity(features (C,N) f32/f16/bf16/int8, queries (Q,C) same dtype, "
        "metric 0=inner 1=angular 2=euclidean, scales (N,) f32 or None, "
        "query_scales (Q,) f32 or None, sim_out (Q,N) f32, minmax_out (Q,2) f32) -> None. "
        "Writes sim_out and per-query [min,max]. int8 storage (inner/angular only) needs "
        "scales and query_scales: <f_n, q> = (float(exact int32 sum) * scales[n]) * "
        "query_scales[q]; float storage takes None for both.",
        py::arg("features"), py::arg("queries"), py::arg("metric"), py::arg("scales"),
        py::arg("query_scales"), py::arg("sim_out"), py::arg("minmax_out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("colorize", &featvis::cpu::colorize,
        "colorize(sim (Q,N) f32, lo (Q,) f32, hi (Q,) f32, lut (256,4) u8, "
        "rgba_out (Q,N,4) u8) -> None. idx = clamp((s-lo)*255/(hi-lo)+0.5, 0, 255) "
        "truncated (NaN -> 0; scale 0 when hi <= lo); rgba = lut[idx].",
        py::arg("sim"), py::arg("lo"), py::arg("hi"), py::arg("lut"),
        py::arg("rgba_out"), py::call_guard<py::gil_scoped_release>());
  m.def("rectify", &featvis::cpu::rectify,
        "rectify(x f32/f16/bf16 contiguous, lo, hi, slope, y_out like x (may be x), packed_out "
        "(ceil(n/32),) int32 or (0,)) -> None. y = clamp(x, lo, hi) (slope 0) or x>0 ? x : slope*x; "
        "mask bit i%32 of word i/32 = lo < x_i < hi.",
        py::arg("x"), py::arg("lo"), py::arg("hi"), py::arg("slope"), py::arg("y_out"), py::arg("packed_out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("rectify_backward", &featvis::cpu::rectify_backward,
        "rectify_backward(grad, packed int32, rule 0=backprop 1=deconvnet 2=guided, slope, dx_out like grad) "
        "-> None. dx = g * (f(m) * d(g)), f(m) = m ? 1 : slope, d(g) = g > 0 ? 1 : slope.",
        py::arg("grad"), py::arg("packed"), py::arg("rule"), py::arg("slope"), py::arg("dx_out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("occlude", &featvis::cpu::occlude,
        "occlude(x, fill contiguous (B,C,H,W) or (B,H,W,C) when nhwc, f32/f16/bf16; src (N,) int32; boxes (N,6) "
        "int32 (y0,y1,x0,x1,c0,c1) half-open; nhwc; out (N, ...x's trailing dims) like x) -> None. "
        "out[n] = x[src[n]], fill[src[n]] inside boxes[n].",
        py::arg("x"), py::arg("fill"), py::arg("src"), py::arg("boxes"), py::arg("nhwc"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("box_accumulate", &featvis::cpu::box_accumulate,
        "box_accumulate(values (N,) f32, src (N,) int32, boxes (N,6) int32, sums (B,P,H,W) f32, counts like sums) "
        "-> None. Zeroes sums/counts, then adds values[n] / 1 over planes [c0,c1) x rows [y0,y1) x cols [x0,x1) "
        "of image src[n], in fp32 in order n (deterministic).",
        py::arg("values"), py::arg("src"), py::arg("boxes"), py::arg("sums"), py::arg("counts"),
        py::call_guard<py::gil_scoped_release>());
  m.def("rise_masks", &featvis::cpu::rise_masks,
        "rise_masks(grid (N,sh,sw) f32, shifts (N,2) int32 (dy,dx), up_h, up_w, masks (N,H,W) f32) -> None. "
        "masks[n] = grid[n] upsampled bilinearly to (up_h, up_w) (align_corners=False), cropped at shifts[n].",
        py::arg("grid"), py::arg("shifts"), py::arg("up_h"), py::arg("up_w"), py::arg("masks"),
        py::call_guard<py::gil_scoped_release>());
  m.def("apply_masks", &featvis::cpu::apply_masks,
        "apply_masks(x, fill (layouts as in occlude), masks (N,H,W) f32, src (N,) int32, nhwc, out like occlude's) "
        "-> None. out[n] = x[src[n]] * m + fill[src[n]] * (1 - m) in fp32, rounded once.",
        py::arg("x"), py::arg("fill"), py::arg("masks"), py::arg("src"), py::arg("nhwc"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("ascent_step", &featvis::cpu::ascent_step,
        "ascent_step(x (N,C,H,W) f32/f16/bf16, g (N,C,h,w) f32, offsets (N,2) int32, scale (N,) f32, m f32 like x, "
        "v f32 like x (Adam) or (0,), next_offsets (N,2) int32, step, lr, optimizer_code 0=SGD 1=Adam 2=Nesterov, "
        "momentum, "
        "beta1, beta2, eps, l1, l2, lp, p, tv, beta, tv_eps, clip_lo, clip_hi, out like x, m_out like m, v_out like v, "
        "nxt (N,C,crop_h,crop_w) x dtype) -> None. One fused step of featvis_fast._ascent_reference in fp32: "
        "d = uncrop(g)*scale - regularizer grad; SGD/Adam/Nesterov update; clamp when clip_lo <= clip_hi; "
        "nxt = crop of out.",
        py::arg("x"), py::arg("g"), py::arg("offsets"), py::arg("scale"), py::arg("m"), py::arg("v"),
        py::arg("next_offsets"), py::arg("step"), py::arg("lr"), py::arg("optimizer_code"), py::arg("momentum"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("l1"), py::arg("l2"), py::arg("lp"), py::arg("p"),
        py::arg("tv"), py::arg("beta"), py::arg("tv_eps"), py::arg("clip_lo"), py::arg("clip_hi"), py::arg("out"),
        py::arg("m_out"), py::arg("v_out"), py::arg("nxt"), py::call_guard<py::gil_scoped_release>());
  m.def("dissect_tally", &featvis::cpu::dissect_tally,
        "dissect_tally(acts (B,U,h,w) f32, thresholds (U,) f64, labels (B,K,H,W) u8, annotated (B,K) u8, "
        "intersection (U,K) i64, unit_area (U,K) i64, label_area (K,) i64) -> None. m = bilinear float64 "
        "upsampling of acts[b,u] to (H,W) (align_corners=False) > thresholds[u]; over images b where "
        "annotated[b,k]: intersection[u,k] += |m & labels[b,k]|, unit_area[u,k] += |m|, label_area[k] += "
        "|labels[b,k]| (exact counts, outputs fully written).",
        py::arg("acts"), py::arg("thresholds"), py::arg("labels"), py::arg("annotated"), py::arg("intersection"),
        py::arg("unit_area"), py::arg("label_area"), py::call_guard<py::gil_scoped_release>());
  m.def("cache_begin", &featvis::cpu::cache_begin,
        "cache_begin() -> bool: install the caching CPU allocator (nested calls count); False when "
        "a higher-priority allocator is installed.");
  m.def("cache_end", &featvis::cpu::cache_end,
        "cache_end() -> None: leave one level; at the outermost, restore the previous allocator and "
        "release cached blocks this call did not reuse.");
  m.def("cache_empty", &featvis::cpu::cache_empty, "cache_empty() -> None: release every cached block.");
  m.def("cache_stats", &featvis::cpu::cache_stats, "cache_stats() -> (cached bytes, hits, misses).");
  m.def("smooth_masks", &featvis::cpu::smooth_masks,
        "smooth_masks(params (K,h,w) f32, weights (s,s,R*R) f32, padding, coldness, out (K,Ho,Wo) f32) -> None. "
        "out = clamp(sum_t v_t softmax_t(coldness v), 0, 1), v_t = weights[uy%s,ux%s,t] * "
        "params[uy/s+ty-padding, ux/s+tx-padding] (0 outside).",
        py::arg("params"), py::arg("weights"), py::arg("padding"), py::arg("coldness"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("smooth_masks_backward", &featvis::cpu::smooth_masks_backward,
        "smooth_masks_backward(grad (K,Ho,Wo) f32, params, weights, padding, coldness, grad_params (K,h,w) f32) -> "
        "None. d(sum grad * smooth_masks(params))/d params.",
        py::arg("grad"), py::arg("params"), py::arg("weights"), py::arg("padding"), py::arg("coldness"),
        py::arg("grad_params"), py::call_guard<py::gil_scoped_release>());
  m.def("blend_levels", &featvis::cpu::blend_levels,
        "blend_levels(pyramid (B,L,C,H,W) f32, masks (N,H,W) f32, src (N,) int32, complement, flip, nhwc, "
        "out (N,C,H,W) or (N,H,W,C) f32) -> None. Linear interpolation between the levels m (L-1) falls between.",
        py::arg("pyramid"), py::arg("masks"), py::arg("src"), py::arg("complement"), py::arg("flip"), py::arg("nhwc"),
        py::arg("out"), py::call_guard<py::gil_scoped_release>());
  m.def("blend_levels_backward", &featvis::cpu::blend_levels_backward,
        "blend_levels_backward(grad like blend_levels' out, pyramid, masks, src, complement, flip, nhwc, "
        "grad_masks (N,H,W) f32) -> None. d(sum grad * blend_levels(...))/d masks.",
        py::arg("grad"), py::arg("pyramid"), py::arg("masks"), py::arg("src"), py::arg("complement"), py::arg("flip"),
        py::arg("nhwc"), py::arg("grad_masks"), py::call_guard<py::gil_scoped_release>());
  m.def("lrp_ratio", &featvis::cpu::lrp_ratio,
        "lrp_ratio(r f32, z1 like r, z2 like r or None, eps, out like r) -> None. "
        "out = r / (z + eps*sign(z)), z = z1 (+ z2), sign(0) = +1, rounded as the reference.",
        py::arg("r"), py::arg("z1"), py::arg("z2"), py::arg("eps"), py::arg("out"),
        py::call_guard<py::gil_scoped_release>());
  m.def("gather_patches", &featvis::cpu::gather_patches,
        "gather_patches(base contiguous (B,C,H,W) or (B,H,W,C) when nhwc, f32/f16/bf16/f64; src (N,) int32; corners "
        "(N,4) int32 (tile_y,tile_x,patch_y,patch_x); patches (N,C,ph,pw) or (N,ph,pw,C) like base; pad; nhwc; out "
        "(N,C,tile_h,tile_w) or (N,tile_h,tile_w,C) like base) -> None. out[n] = the tile of base[src[n]] at "
        "(tile_y, tile_x) with patches[n] pasted in at (patch_y, patch_x), pad outside the map (an exact copy).",
        py::arg("base"), py::arg("src"), py::arg("corners"), py::arg("patches"), py::arg("pad"), py::arg("nhwc"),
        py::arg("out"), py::call_guard<py::gil_scoped_release>());
}
