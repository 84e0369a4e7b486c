// featvis-fast: CPU kernel of the LRP rules' elementwise step; semantics:
// featvis_fast/_lrp_reference.py.
//
//   lrp_ratio(r, z1, z2, eps, out)   out = r / (z + eps * sign(z)), z = z1 (+ z2), sign(0) = +1
//
// float32, contiguous, one shape (the op layer passes channels-last tensors in memory order);
// z2 may be None. Rounded after each operation as the reference (no FMA contraction: the build
// uses -ffp-contract=off), so results equal the float32 reference bit for bit.
// Work: at::parallel_for over blocks of elements.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace featvis::cpu {

void lrp_ratio(const at::Tensor& r, const at::Tensor& z1, const std::optional<at::Tensor>& z2, double eps,
               at::Tensor& out);

}  // namespace featvis::cpu
