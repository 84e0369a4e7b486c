// featvis-fast CPU kernel of featvis::lrp_ratio (see lrp_cpu.h).
#include "lrp_cpu.h"

#include <ATen/Parallel.h>

namespace featvis::cpu {
namespace {

void check(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), "featvis_cpu: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "featvis_cpu: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "featvis_cpu: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == like.sizes(), "featvis_cpu: ", name, " must be shaped like r");
}

}  // namespace

void lrp_ratio(const at::Tensor& r, const at::Tensor& z1, const std::optional<at::Tensor>& z2, double eps,
               at::Tensor& out) {
  check(r, "r", r);
  check(z1, "z1", r);
  check(out, "out", r);
  if (z2.has_value()) check(*z2, "z2", r);
  const float* R = r.data_ptr<float>();
  const float* Z1 = z1.data_ptr<float>();
  const float* Z2 = z2.has_value() ? z2->data_ptr<float>() : nullptr;
  float* O = out.data_ptr<float>();
  const float e = static_cast<float>(eps);
  at::parallel_for(0, r.numel(), 32768, [&](int64_t begin, int64_t end) {
    if (Z2 != nullptr) {
      for (int64_t i = begin; i < end; ++i) {
        const float z = Z1[i] + Z2[i];
        O[i] = R[i] / (z + (z < 0.0f ? -e : e));
      }
    } else {
      for (int64_t i = begin; i < end; ++i) {
        const float z = Z1[i];
        O[i] = R[i] / (z + (z < 0.0f ? -e : e));
      }
    }
  });
}

}  // namespace featvis::cpu
