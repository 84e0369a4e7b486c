// featvis-fast: pixel_similarity, the CPU similarity entry point: argument
// checks and dtype dispatch to the kernels (similarity_cpu_float.cpp,
// similarity_cpu_int8.cpp), plus the pixel-tile driver they share (tile plan,
// at::parallel_for over tiles, deterministic min/max reduction).
// The design is described in similarity_cpu.h.

#include "similarity_cpu.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace featvis {
namespace cpu {
namespace {

// A (len,) float32 contiguous CPU tensor.
void check_scale_vector(const at::Tensor& t, const char* name, int64_t len,
                        const char* len_name) {
  check_cpu_contig(t, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len, name, " must have shape (", len_name,
              ",) = (", len, ",), got ", t.sizes());
}

}  // namespace

// ----------------------------------------------------------------------------
// Pixel-tile driver (contract in similarity_cpu.h).

TilePlan plan_tiles(int64_t C, int64_t N, int64_t Q) {
  TilePlan p;
  const int64_t nthreads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tile_cap =
      std::min(kMaxTile, std::max(kMinTileCap, (kAccBudgetFloats / Q) / 64 * 64));
  p.tile = std::min(tile_cap, ((N + nthreads - 1) / nthreads + 63) / 64 * 64);
  p.ntiles = (N + p.tile - 1) / p.tile;
  p.cblock = Q <= 2 ? kCBlockFewQ : kCBlockManyQ;
  // Small problems are not worth waking the thread pool.
  const int64_t work = C * N * Q;
  p.grain = work < (int64_t{1} << 18) ? p.ntiles : 1;
  return p;
}

void run_tiles(const TilePlan& plan, int64_t N, int64_t Q,
               c10::function_ref<void(int64_t, int64_t)> accumulate,
               c10::function_ref<void(int64_t, int64_t, int64_t, float&, float&, bool&)> finalize,
               float* minmax) {
  const int64_t ntiles = plan.ntiles;
  std::vector<float> part(static_cast<size_t>(ntiles * Q * 2));
  std::vector<uint8_t> part_nan(static_cast<size_t>(ntiles * Q), 0);

  at::parallel_for(0, ntiles, plan.grain, [&](int64_t t_begin, int64_t t_end) {
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t n0 = t * plan.tile;
      const int64_t len = std::min(plan.tile, N - n0);
      accumulate(n0, len);
      for (int64_t q = 0; q < Q; ++q) {
        float mn = std::numeric_limits<float>::infinity();
        float mx = -std::numeric_limits<float>::infinity();
        bool nan = false;
        finalize(q, n0, len, mn, mx, nan);
        part[(t * Q + q) * 2 + 0] = mn;
        part[(t * Q + q) * 2 + 1] = mx;
        part_nan[t * Q + q] = nan ? 1 : 0;
      }
    }
  });

  const float qnan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t q = 0; q < Q; ++q) {
    float mn = std::numeric_limits<float>::infinity();
    float mx = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (int64_t t = 0; t < ntiles; ++t) {
      const float a = part[(t * Q + q) * 2 + 0];
      const float b = part[(t * Q + q) * 2 + 1];
      mn = (a < mn) ? a : mn;
      mx = (b > mx) ? b : mx;
      nan = nan || part_nan[t * Q + q];
    }
    minmax[q * 2 + 0] = nan ? qnan : mn;
    minmax[q * 2 + 1] = nan ? qnan : mx;
  }
}

// ----------------------------------------------------------------------------
// Entry point.

void check_cpu_contig(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), name, " must be a defined tensor");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got device ",
              t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void pixel_similarity(const at::Tensor& features, const at::Tensor& queries,
                      int64_t metric, const std::optional<at::Tensor>& scales,
                      const std::optional<at::Tensor>& query_scales,
                      const at::Tensor& sim_out, const at::Tensor& minmax_out) {
  check_cpu_contig(features, "features");
  check_cpu_contig(queries, "queries");
  check_cpu_contig(sim_out, "sim_out");
  check_cpu_contig(minmax_out, "minmax_out");
  TORCH_CHECK(features.dim() == 2, "features must be 2-D (C, N), got ",
              features.dim(), "-D tensor of shape ", features.sizes());
  TORCH_CHECK(queries.dim() == 2, "queries must be 2-D (Q, C), got ",
              queries.dim(), "-D tensor of shape ", queries.sizes());
  TORCH_CHECK(sim_out.dim() == 2, "sim_out must be 2-D (Q, N), got shape ",
              sim_out.sizes());
  TORCH_CHECK(minmax_out.dim() == 2, "minmax_out must be 2-D (Q, 2), got shape ",
              minmax_out.sizes());
  const auto st = features.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kChar,
              "features dtype must be float32, float16, bfloat16 or int8, got ", st);
  TORCH_CHECK(queries.scalar_type() == st,
              "queries dtype (", queries.scalar_type(),
              ") must match features dtype (", st, ")");
  TORCH_CHECK(sim_out.scalar_type() == at::kFloat,
              "sim_out must be float32, got ", sim_out.scalar_type());
  TORCH_CHECK(minmax_out.scalar_type() == at::kFloat,
              "minmax_out must be float32, got ", minmax_out.scalar_type());
  TORCH_CHECK(metric == kInner || metric == kAngular || metric == kEuclidean,
              "metric must be 0 (inner), 1 (angular) or 2 (euclidean), got ",
              metric);
  const int64_t C = features.size(0);
  const int64_t N = features.size(1);
  const int64_t Q = queries.size(0);
  TORCH_CHECK(C >= 1, "features must have at least one channel (C >= 1), got C=", C);
  TORCH_CHECK(N >= 1, "features must have at least one pixel (N >= 1), got N=", N);
  TORCH_CHECK(Q >= 1, "queries must contain at least one query (Q >= 1), got Q=", Q);
  TORCH_CHECK(queries.size(1) == C, "queries has ", queries.size(1),
              " channels but features has C=", C);
  TORCH_CHECK(sim_out.size(0) == Q && sim_out.size(1) == N,
              "sim_out must have shape (Q, N) = (", Q, ", ", N, "), got ",
              sim_out.sizes());
  TORCH_CHECK(minmax_out.size(0) == Q && minmax_out.size(1) == 2,
              "minmax_out must have shape (Q, 2) = (", Q, ", 2), got ",
              minmax_out.sizes());
  const bool has_scales = scales.has_value() && scales->defined();
  const bool has_qscales = query_scales.has_value() && query_scales->defined();
  if (st == at::kChar) {
    TORCH_CHECK(metric != kEuclidean, "euclidean is not supported with int8 storage");
    TORCH_CHECK(has_scales && has_qscales,
                "int8 storage needs scales (N,) and query_scales (Q,) float32 tensors");
    check_scale_vector(*scales, "scales", N, "N");
    check_scale_vector(*query_scales, "query_scales", Q, "Q");
    TORCH_CHECK(C <= kMaxChannelsI8, "int8 storage supports at most ", kMaxChannelsI8,
                " channels (exact int32 accumulation), got C=", C);
  } else {
    TORCH_CHECK(!has_scales && !has_qscales,
                "scales and query_scales are only used with int8 storage; pass None for ",
                st, " features");
  }

  at::assert_no_overlap(sim_out, features);
  at::assert_no_overlap(sim_out, queries);
  at::assert_no_overlap(minmax_out, features);
  at::assert_no_overlap(minmax_out, queries);
  at::assert_no_overlap(minmax_out, sim_out);
  if (st == at::kChar) {
    for (const at::Tensor* s : {&*scales, &*query_scales}) {
      at::assert_no_overlap(sim_out, *s);
      at::assert_no_overlap(minmax_out, *s);
    }
  }

  switch (st) {
    case at::kFloat:
      similarity_typed<float>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kHalf:
      similarity_typed<c10::Half>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kBFloat16:
      similarity_typed<c10::BFloat16>(features, queries, metric, sim_out, minmax_out);
      break;
    case at::kChar:
      similarity_int8(features, queries, *scales, *query_scales, metric, sim_out,
                      minmax_out);
      break;
    default:
      TORCH_CHECK(false, "unsupported dtype ", st);
  }
}

}  // namespace cpu
}  // namespace featvis
