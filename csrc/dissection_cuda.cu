// featvis-fast CUDA kernels of the Network Dissection tally (C ABI: dissection_cuda.h).
//
// Three launches on the caller's stream after zeroing the outputs:
//   taps_kernel    the source taps (i0, i1) and weights (1 - w1, w1) of every output row and column, in float64
//                  exactly as the reference's source_index() (explicit _rn operations: no contraction);
//   pack_kernel    one block per (image, concept) plane that is annotated: warp ballots pack the label
//                  bytes 32 pixels per word into the workspace, and the plane's popcount goes to label_area;
//   tally_kernel   one block per (unit, image) (grid-stride over images): per chunk of up to kChunkWords
//                  words of pixels, each warp interpolates 32 pixels at a time in float64 (rows first,
//                  as the reference), thresholds them and stores the ballot word of the mask in shared
//                  memory; then for every annotated concept the threads AND the mask words with the packed
//                  label words, popcount, reduce per warp and add with one int64 atomic per warp.
//                  Empty chunks skip the concept loop; images without an annotated concept are skipped.
// The upsampled maps only ever exist as 32-pixel ballots.
#include "dissection_cuda.h"

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunkWords = 2048;  // mask words (65536 pixels) per shared-memory chunk: 8 KiB
constexpr int64_t kMaxGridY = 65535;
constexpr unsigned kFull = 0xFFFFFFFFu;

// Workspace layout (all offsets multiples of 8 bytes): wy0[H] wy1[H] wx0[W] wx1[W] (double),
// y0[H] y1[H] x0[W] x1[W] (int32, padded to 8 bytes), then the packed labels (B * K * words_per_plane uint32).
struct Layout {
  int64_t taps_f64, taps_i32, labels, total;
};

__host__ __device__ inline int64_t words_per_plane(int64_t H, int64_t W) { return (H * W + 31) / 32; }

Layout layout(int64_t B, int64_t K, int64_t H, int64_t W) {
  Layout l;
  l.taps_f64 = 0;
  l.taps_i32 = 2 * (H + W) * 8;
  l.labels = l.taps_i32 + ((2 * (H + W) * 4 + 7) / 8) * 8;
  l.total = l.labels + B * K * words_per_plane(H, W) * 4;
  return l;
}

// PyTorch's align_corners=False source index, as the reference: src = max((o + 0.5) * scale - 0.5, 0),
// i0 = min(floor(src), in - 1), i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1 (scale = in / out in
// float64, from the host).
__device__ __forceinline__ void source_tap(int64_t o, int64_t in, double scale, int32_t& i0, int32_t& i1, double& w0,
                                           double& w1) {
  double src = __dsub_rn(__dmul_rn(__dadd_rn(static_cast<double>(o), 0.5), scale), 0.5);
  if (src < 0.0) src = 0.0;
  int64_t f = static_cast<int64_t>(floor(src));
  if (f > in - 1) f = in - 1;
  i0 = static_cast<int32_t>(f);
  i1 = static_cast<int32_t>(f + 1 < in - 1 ? f + 1 : in - 1);
  w1 = __dsub_rn(src, static_cast<double>(f));
  w0 = __dsub_rn(1.0, w1);
}

__global__ void __launch_bounds__(kThreads)
taps_kernel(int64_t H, int64_t W, int64_t h, int64_t w, double scale_h, double scale_w, double* __restrict__ wf,
            int32_t* __restrict__ wi) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= H + W) return;
  int32_t i0, i1;
  double w0, w1;
  if (i < H) {
    source_tap(i, h, scale_h, i0, i1, w0, w1);
    wf[i] = w0, wf[H + i] = w1;
    wi[i] = i0, wi[H + i] = i1;
  } else {
    const int64_t x = i - H;
    source_tap(x, w, scale_w, i0, i1, w0, w1);
    wf[2 * H + x] = w0, wf[2 * H + W + x] = w1;
    wi[2 * H + x] = i0, wi[2 * H + W + x] = i1;
  }
}

// One block per (image, concept) plane; planes of unannotated concepts are neither packed nor counted.
__global__ void __launch_bounds__(kThreads)
pack_kernel(const uint8_t* __restrict__ labels, const uint8_t* __restrict__ annotated, int64_t K, int64_t HW,
            int64_t words, uint32_t* __restrict__ packed, unsigned long long* __restrict__ label_area) {
  const int64_t plane = blockIdx.x;
  if (!annotated[plane]) return;
  const uint8_t* src = labels + plane * HW;
  uint32_t* dst = packed + plane * words;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long count = 0;
  for (int64_t j = warp; j < words; j += kWarps) {
    const int64_t p = j * 32 + lane;
    const uint32_t bits = __ballot_sync(kFull, p < HW && __ldg(src + p) != 0);
    if (lane == 0) {
      dst[j] = bits;
      count += __popc(bits);
    }
  }
  if (lane == 0 && count) atomicAdd(label_area + plane % K, count);
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(kFull, v, d);
  return v;
}

__global__ void __launch_bounds__(kThreads)
tally_kernel(const float* __restrict__ acts, const double* __restrict__ thresholds,
             const uint8_t* __restrict__ annotated, const double* __restrict__ wf, const int32_t* __restrict__ wi,
             const uint32_t* __restrict__ packed, int64_t B, int64_t U, int64_t h, int64_t w, int64_t K, int64_t H,
             int64_t W, unsigned long long* __restrict__ intersection, unsigned long long* __restrict__ unit_area) {
  __shared__ uint32_t s_mask[kChunkWords];
  __shared__ unsigned long long s_warp[kWarps];  // the chunk's mask count per warp
  const int64_t u = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t HW = H * W, words = words_per_plane(H, W);
  const int32_t W32 = static_cast<int32_t>(W);
  const double t = thresholds[u];
  const double* wy0 = wf;
  const double* wy1 = wf + H;
  const double* wx0 = wf + 2 * H;
  const double* wx1 = wf + 2 * H + W;
  const int32_t* y0s = wi;
  const int32_t* y1s = wi + H;
  const int32_t* x0s = wi + 2 * H;
  const int32_t* x1s = wi + 2 * H + W;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const uint8_t* ann = annotated + b * K;
    int any = 0;
    for (int64_t k = threadIdx.x; k < K; k += kThreads) any |= ann[k] != 0;
    if (!__syncthreads_or(any)) continue;  // block-uniform
    const float* a = acts + (b * U + u) * h * w;
    unsigned long long total = 0;  // the mask's pixel count (block-uniform)
    for (int64_t c0 = 0; c0 < words; c0 += kChunkWords) {
      const int64_t cw = words - c0 < kChunkWords ? words - c0 : kChunkWords;
      __syncthreads();  // the previous chunk's s_mask and s_warp are consumed
      unsigned long long mine = 0;
      for (int64_t j = warp; j < cw; j += kWarps) {
        const int64_t p = (c0 + j) * 32 + lane;
        bool bit = false;
        if (p < HW) {  // HW < 2^31: 32-bit division
          const int32_t Y = static_cast<int32_t>(p) / W32, X = static_cast<int32_t>(p) % W32;
          const int64_t r0 = static_cast<int64_t>(__ldg(y0s + Y)) * w, r1 = static_cast<int64_t>(__ldg(y1s + Y)) * w;
          const int32_t c0x = __ldg(x0s + X), c1x = __ldg(x1s + X);
          const double v0 = __ldg(wy0 + Y), v1 = __ldg(wy1 + Y);
          // rows[x] = a[y0, x] (1 - wy) + a[y1, x] wy at x0 and x1, then up = rows[x0] (1 - wx) + rows[x1] wx
          const double top = __dadd_rn(__dmul_rn(static_cast<double>(__ldg(a + r0 + c0x)), v0),
                                       __dmul_rn(static_cast<double>(__ldg(a + r1 + c0x)), v1));
          const double bot = __dadd_rn(__dmul_rn(static_cast<double>(__ldg(a + r0 + c1x)), v0),
                                       __dmul_rn(static_cast<double>(__ldg(a + r1 + c1x)), v1));
          const double up = __dadd_rn(__dmul_rn(top, __ldg(wx0 + X)), __dmul_rn(bot, __ldg(wx1 + X)));
          bit = up > t;
        }
        const uint32_t m = __ballot_sync(kFull, bit);
        if (lane == 0) {
          s_mask[j] = m;
          mine += __popc(m);
        }
      }
      if (lane == 0) s_warp[warp] = mine;
      __syncthreads();
      unsigned long long chunk_count = 0;
      for (int i = 0; i < kWarps; ++i) chunk_count += s_warp[i];
      total += chunk_count;
      if (chunk_count == 0) continue;  // an empty chunk intersects nothing
      for (int64_t k = 0; k < K; ++k) {
        if (!ann[k]) continue;  // block-uniform
        const uint32_t* lab = packed + (b * K + k) * words + c0;
        unsigned long long both = 0;
        for (int64_t j = threadIdx.x; j < cw; j += kThreads) both += __popc(s_mask[j] & __ldg(lab + j));
        both = warp_sum(both);
        if (lane == 0 && both) atomicAdd(intersection + u * K + k, both);
      }
    }
    if (total)
      for (int64_t k = threadIdx.x; k < K; k += kThreads)
        if (ann[k]) atomicAdd(unit_area + u * K + k, total);
  }
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

}  // namespace

extern "C" int64_t featvis_dissect_tally_workspace_bytes(int64_t B, int64_t K, int64_t H, int64_t W) {
  if (B < 0 || K < 0 || H < 0 || W < 0) return 0;
  return layout(B, K, H, W).total;
}

extern "C" int featvis_dissect_tally_cuda(const float* acts, const double* thresholds, const uint8_t* labels,
                                          const uint8_t* annotated, int64_t B, int64_t U, int64_t h, int64_t w,
                                          int64_t K, int64_t H, int64_t W, void* workspace, int64_t* intersection,
                                          int64_t* unit_area, int64_t* label_area, void* stream) {
  if (B < 0 || U < 0 || K < 0 || h < 1 || w < 1 || H < 1 || W < 1 || H * W >= (int64_t(1) << 31) ||
      B * K >= (int64_t(1) << 31) || U >= (int64_t(1) << 31))
    return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaError_t err = cudaSuccess;
  if (U * K > 0) {
    if ((err = cudaMemsetAsync(intersection, 0, U * K * sizeof(int64_t), s)) != cudaSuccess) return err;
    if ((err = cudaMemsetAsync(unit_area, 0, U * K * sizeof(int64_t), s)) != cudaSuccess) return err;
  }
  if (K > 0 && (err = cudaMemsetAsync(label_area, 0, K * sizeof(int64_t), s)) != cudaSuccess) return err;
  if (B == 0 || K == 0) return 0;
  const Layout l = layout(B, K, H, W);
  char* ws = static_cast<char*>(workspace);
  double* wf = reinterpret_cast<double*>(ws + l.taps_f64);
  int32_t* wi = reinterpret_cast<int32_t*>(ws + l.taps_i32);
  uint32_t* packed = reinterpret_cast<uint32_t*>(ws + l.labels);
  const double scale_h = static_cast<double>(h) / static_cast<double>(H);
  const double scale_w = static_cast<double>(w) / static_cast<double>(W);
  taps_kernel<<<blocks_for(H + W), kThreads, 0, s>>>(H, W, h, w, scale_h, scale_w, wf, wi);
  pack_kernel<<<static_cast<unsigned>(B * K), kThreads, 0, s>>>(
      labels, annotated, K, H * W, words_per_plane(H, W), packed, reinterpret_cast<unsigned long long*>(label_area));
  if (U > 0) {
    const dim3 grid(static_cast<unsigned>(U), static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY));
    tally_kernel<<<grid, kThreads, 0, s>>>(acts, thresholds, annotated, wf, wi, packed, B, U, h, w, K, H, W,
                                           reinterpret_cast<unsigned long long*>(intersection),
                                           reinterpret_cast<unsigned long long*>(unit_area));
  }
  return static_cast<int>(cudaGetLastError());
}
