// Python bindings for the featvis-fast CPU kernels (csrc/similarity_cpu.h).
#include <torch/extension.h>

#include "cpu_cache.h"
#include "rectifier_cpu.h"
#include "similarity_cpu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "featvis-fast CPU kernels: pixel similarity, LUT colorization, rectifier rules";
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
  m.def("cache_begin", &featvis::cpu::cache_begin,
        "cache_begin() -> bool: install the caching CPU allocator (nested calls count); False when "
        "a higher-priority allocator is installed.");
  m.def("cache_end", &featvis::cpu::cache_end,
        "cache_end() -> None: leave one level; at the outermost, restore the previous allocator and "
        "release cached blocks this call did not reuse.");
  m.def("cache_empty", &featvis::cpu::cache_empty, "cache_empty() -> None: release every cached block.");
  m.def("cache_stats", &featvis::cpu::cache_stats, "cache_stats() -> (cached bytes, hits, misses).");
}
