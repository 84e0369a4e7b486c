// Helpers the CPU kernel files share: the input check of a raw kernel and the parallel grain.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace featvis::cpu {

inline void check_cpu_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "featvis_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "featvis_cpu: ", name, " must be contiguous");
}

// Rows per parallel task so that each task moves at least elems_per_task elements.
inline int64_t row_grain(int64_t row_len, int64_t elems_per_task = 32768) {
  return std::max<int64_t>(1, elems_per_task / std::max<int64_t>(1, row_len));
}

}  // namespace featvis::cpu
