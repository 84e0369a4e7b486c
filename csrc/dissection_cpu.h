// featvis-fast: CPU kernel of the Network Dissection tally `featvis::dissect_tally` (semantics:
// featvis_fast/_dissection_reference.py; op layer and calling convention: featvis_fast/ops/dissection.py).
//
//   dissect_tally(acts, thresholds, labels, annotated, intersection, unit_area, label_area)
//
// acts (B, U, h, w) float32, thresholds (U,) float64, labels (B, K, H, W) uint8 (nonzero = in the concept;
// a bool tensor viewed as uint8), annotated (B, K) uint8 (nonzero = annotated); all contiguous, h, w, H, W >= 1.
// For every image b and unit u the mask m = bilinear_upsample(acts[b, u], H, W) > thresholds[u] is formed in
// float64 exactly as the reference (PyTorch's align_corners=False rule, rows first, no FMA contraction), bit
// by bit, and never materialized beyond one unit at a time. Outputs (fully written, int64, exact):
//   intersection[u, k] = sum over b with annotated[b, k] of |m[b, u] & labels[b, k]|   (U, K)
//   unit_area[u, k]    = sum over b with annotated[b, k] of |m[b, u]|                   (U, K)
//   label_area[k]      = sum over b with annotated[b, k] of |labels[b, k]|              (K,)
// Design: images are taken in groups whose bit-packed labels (annotated concepts only; rows byte-aligned, 8
// pixels per byte) fit a memory budget; one at::parallel_for over units per group, each task owning rows u of
// the tallies (no atomics). Per (image, unit) the task classifies every 8-pixel group of each source row pair
// by the range of the source values it reads: all below the threshold by a safe margin (mask byte 0), all
// above (0xFF), or exact: only exact groups are interpolated (a gathered h x W float64 intermediate per
// column tap, then 8 pixels per AVX-512 step or a portable loop), so masks over a top quantile cost a
// fraction of the interpolation. Then it adds popcount(mask & label) per annotated concept (AVX-512 VPOPCNTQ
// when available; over the nonzero mask words only when those are few). Images without annotated concepts are
// skipped. Compile with -DFEATVIS_DISSECTION_PORTABLE to force the portable paths.
#pragma once

#include <ATen/ATen.h>

namespace featvis::cpu {

void dissect_tally(const at::Tensor& acts, const at::Tensor& thresholds, const at::Tensor& labels,
                   const at::Tensor& annotated, const at::Tensor& intersection, const at::Tensor& unit_area,
                   const at::Tensor& label_area);

}  // namespace featvis::cpu
