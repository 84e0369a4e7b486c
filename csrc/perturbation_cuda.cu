// featvis-fast CUDA kernels for the perturbation ops (C ABI: perturbation_cuda.h).
// occlude / apply_masks: a 2-D grid, blockIdx.y walks the perturbed copies n (reading src[n] and
// boxes[n] once per block), blockIdx.x a grid-stride loop over the elements of one image in memory
// order (NCHW or NHWC); occlude copies raw 2- or 4-byte words (exact). box_accumulate gathers: one
// thread per output element walks the boxes in index order, staged through shared memory in tiles
// (deterministic, no atomics; fine for N up to a few thousand). rise_masks: one thread per mask
// pixel, PyTorch's bilinear align_corners=False rule in fp32. No FMA contraction anywhere (_rn).
#include "perturbation_cuda.h"
#include "featvis_abi.h"
#include "cuda_convert.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;
constexpr int64_t kMaxBlocksY = 65535;
constexpr int kBoxFields = 6;
constexpr int kTile = kThreads;        // boxes staged per shared-memory tile
constexpr int64_t kInt32Index = 1 << 30;  // below this, per-image offsets (plus a grid stride) fit int32

using featvis::cuda::from_float;
using featvis::cuda::to_float;

// (c, y, x) of offset `off` within one image stored NCHW or NHWC.
template <typename I, bool kNHWC>
__device__ __forceinline__ void pixel_coords(I off, I C, I H, I W, I& c, I& y, I& x) {
  if (kNHWC) {
    c = off % C;
    const I pix = off / C;
    y = pix / W;
    x = pix % W;
  } else {
    const I plane = H * W;
    c = off / plane;
    const I pix = off % plane;
    y = pix / W;
    x = pix % W;
  }
}

// T: a raw word of the element size (exact copy, no conversion).
template <typename T, typename I, bool kNHWC>
__global__ void __launch_bounds__(kThreads)
occlude_kernel(const T* __restrict__ x, const T* __restrict__ fill, const int32_t* __restrict__ src,
               const int32_t* __restrict__ boxes, int64_t N, I C, I H, I W, T* __restrict__ out) {
  const I size = C * H * W;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const int32_t* box = boxes + n * kBoxFields;
    const I y0 = __ldg(box + 0), y1 = __ldg(box + 1), x0 = __ldg(box + 2), x1 = __ldg(box + 3);
    const I c0 = __ldg(box + 4), c1 = __ldg(box + 5);
    const int64_t base = static_cast<int64_t>(__ldg(src + n)) * size;
    const T* xs = x + base;
    const T* fs = fill + base;
    T* o = out + n * static_cast<int64_t>(size);
    for (I off = static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x); off < size; off += stride) {
      I c, y, xx;
      pixel_coords<I, kNHWC>(off, C, H, W, c, y, xx);
      const bool inside = y >= y0 && y < y1 && xx >= x0 && xx < x1 && c >= c0 && c < c1;
      o[off] = inside ? __ldg(fs + off) : __ldg(xs + off);
    }
  }
}

template <typename T, typename I, bool kNHWC>
__global__ void __launch_bounds__(kThreads)
apply_masks_kernel(const T* __restrict__ x, const T* __restrict__ fill, const float* __restrict__ masks,
                   const int32_t* __restrict__ src, int64_t N, I C, I H, I W, T* __restrict__ out) {
  const I plane = H * W;
  const I size = C * plane;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    const int64_t base = static_cast<int64_t>(__ldg(src + n)) * size;
    const T* xs = x + base;
    const T* fs = fill + base;
    const float* m = masks + n * static_cast<int64_t>(plane);
    T* o = out + n * static_cast<int64_t>(size);
    for (I off = static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x); off < size; off += stride) {
      const float w = __ldg(m + (kNHWC ? off / C : off % plane));
      const float a = __fmul_rn(to_float<T>(xs[off]), w);
      const float b = __fmul_rn(to_float<T>(fs[off]), __fsub_rn(1.0f, w));
      o[off] = from_float<T>(__fadd_rn(a, b));
    }
  }
}

// The grid-stride loop runs over whole blocks so every thread takes part in each tile load.
__global__ void __launch_bounds__(kThreads)
box_accumulate_kernel(const float* __restrict__ values, const int32_t* __restrict__ src,
                      const int32_t* __restrict__ boxes, int64_t N, int64_t P, int64_t H, int64_t W, int64_t total,
                      float* __restrict__ sums, float* __restrict__ counts) {
  __shared__ int32_t s_box[kTile * kBoxFields];
  __shared__ int32_t s_src[kTile];
  __shared__ float s_val[kTile];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t start = static_cast<int64_t>(blockIdx.x) * kThreads; start < total; start += stride) {
    const int64_t i = start + threadIdx.x;
    const bool in_range = i < total;
    const int64_t pix = i % (H * W);
    const int64_t plane = i / (H * W);
    const int32_t y = static_cast<int32_t>(pix / W), x = static_cast<int32_t>(pix % W);
    const int32_t p = static_cast<int32_t>(plane % P), b = static_cast<int32_t>(plane / P);
    float acc = 0.0f, cnt = 0.0f;
    for (int64_t t0 = 0; t0 < N; t0 += kTile) {
      const int m = static_cast<int>(N - t0 < kTile ? N - t0 : kTile);
      __syncthreads();  // the previous tile is consumed
      for (int k = threadIdx.x; k < m * kBoxFields; k += kThreads) s_box[k] = __ldg(boxes + t0 * kBoxFields + k);
      if (static_cast<int>(threadIdx.x) < m) {
        s_src[threadIdx.x] = __ldg(src + t0 + threadIdx.x);
        s_val[threadIdx.x] = __ldg(values + t0 + threadIdx.x);
      }
      __syncthreads();
      if (in_range) {
        for (int k = 0; k < m; ++k) {
          const int32_t* bx = s_box + k * kBoxFields;
          if (s_src[k] == b && y >= bx[0] && y < bx[1] && x >= bx[2] && x < bx[3] && p >= bx[4] && p < bx[5]) {
            acc = __fadd_rn(acc, s_val[k]);
            cnt = __fadd_rn(cnt, 1.0f);
          }
        }
      }
    }
    if (in_range) {
      sums[i] = acc;
      counts[i] = cnt;
    }
  }
}

// PyTorch's area_pixel_compute_source_index (align_corners=False, fp32) and linear weights.
__device__ __forceinline__ void source_index(float scale, int dst, int in_size, int& i0, int& i1, float& l0,
                                             float& l1) {
  float real = __fsub_rn(__fmul_rn(scale, __fadd_rn(static_cast<float>(dst), 0.5f)), 0.5f);
  if (real < 0.0f) real = 0.0f;
  i0 = static_cast<int>(real);  // floor: real >= 0
  i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  l1 = __fsub_rn(real, static_cast<float>(i0));
  l0 = __fsub_rn(1.0f, l1);
}

__global__ void __launch_bounds__(kThreads)
rise_masks_kernel(const float* __restrict__ grid, const int32_t* __restrict__ shifts, int64_t total, int grid_h,
                  int grid_w, float scale_h, float scale_w, int64_t H, int64_t W, float* __restrict__ masks) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int64_t n = i / (H * W);
    const int64_t pix = i % (H * W);
    const int row = static_cast<int>(pix / W) + __ldg(shifts + 2 * n);
    const int col = static_cast<int>(pix % W) + __ldg(shifts + 2 * n + 1);
    int h0, h1, w0, w1;
    float lh0, lh1, lw0, lw1;
    source_index(scale_h, row, grid_h, h0, h1, lh0, lh1);
    source_index(scale_w, col, grid_w, w0, w1, lw0, lw1);
    const float* g0 = grid + n * grid_h * grid_w + h0 * grid_w;  // row h0
    const float* g1 = grid + n * grid_h * grid_w + h1 * grid_w;  // row h1
    const float top = __fadd_rn(__fmul_rn(lw0, __ldg(g0 + w0)), __fmul_rn(lw1, __ldg(g0 + w1)));
    const float bot = __fadd_rn(__fmul_rn(lw0, __ldg(g1 + w0)), __fmul_rn(lw1, __ldg(g1 + w1)));
    masks[i] = __fadd_rn(__fmul_rn(lh0, top), __fmul_rn(lh1, bot));
  }
}

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

dim3 image_grid(int64_t N, int64_t size) {
  const int64_t by = N < kMaxBlocksY ? N : kMaxBlocksY;
  return dim3(static_cast<unsigned>(blocks_for(size)), static_cast<unsigned>(by > 0 ? by : 1));
}

template <typename T, typename I>
int launch_occlude(const void* x, const void* fill, const int32_t* src, const int32_t* boxes, int64_t N, int64_t C,
                   int64_t H, int64_t W, bool nhwc, void* out, cudaStream_t stream) {
  const dim3 grid = image_grid(N, C * H * W);
  const T* xp = static_cast<const T*>(x);
  const T* fp = static_cast<const T*>(fill);
  T* op = static_cast<T*>(out);
  const I c = static_cast<I>(C), h = static_cast<I>(H), w = static_cast<I>(W);
  if (nhwc)
    occlude_kernel<T, I, true><<<grid, kThreads, 0, stream>>>(xp, fp, src, boxes, N, c, h, w, op);
  else
    occlude_kernel<T, I, false><<<grid, kThreads, 0, stream>>>(xp, fp, src, boxes, N, c, h, w, op);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int dispatch_occlude(const void* x, const void* fill, const int32_t* src, const int32_t* boxes, int64_t N, int64_t C,
                     int64_t H, int64_t W, bool nhwc, void* out, cudaStream_t stream) {
  if (C * H * W < kInt32Index) return launch_occlude<T, int32_t>(x, fill, src, boxes, N, C, H, W, nhwc, out, stream);
  return launch_occlude<T, int64_t>(x, fill, src, boxes, N, C, H, W, nhwc, out, stream);
}

template <typename T, typename I>
int launch_apply_masks(const void* x, const void* fill, const float* masks, const int32_t* src, int64_t N, int64_t C,
                       int64_t H, int64_t W, bool nhwc, void* out, cudaStream_t stream) {
  const dim3 grid = image_grid(N, C * H * W);
  const T* xp = static_cast<const T*>(x);
  const T* fp = static_cast<const T*>(fill);
  T* op = static_cast<T*>(out);
  const I c = static_cast<I>(C), h = static_cast<I>(H), w = static_cast<I>(W);
  if (nhwc)
    apply_masks_kernel<T, I, true><<<grid, kThreads, 0, stream>>>(xp, fp, masks, src, N, c, h, w, op);
  else
    apply_masks_kernel<T, I, false><<<grid, kThreads, 0, stream>>>(xp, fp, masks, src, N, c, h, w, op);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int dispatch_apply_masks(const void* x, const void* fill, const float* masks, const int32_t* src, int64_t N,
                         int64_t C, int64_t H, int64_t W, bool nhwc, void* out, cudaStream_t stream) {
  if (C * H * W < kInt32Index)
    return launch_apply_masks<T, int32_t>(x, fill, masks, src, N, C, H, W, nhwc, out, stream);
  return launch_apply_masks<T, int64_t>(x, fill, masks, src, N, C, H, W, nhwc, out, stream);
}

bool bad_dims(int64_t N, int64_t C, int64_t H, int64_t W) { return N < 0 || C < 0 || H < 0 || W < 0; }

}  // namespace

extern "C" int featvis_occlude_cuda(const void* x, const void* fill, const int32_t* src, const int32_t* boxes,
                                    int64_t N, int64_t C, int64_t H, int64_t W, int nhwc, int dtype, void* out,
                                    void* stream) {
  if (bad_dims(N, C, H, W)) return static_cast<int>(cudaErrorInvalidValue);
  if (N == 0 || C * H * W == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {  // an exact copy: move raw words of the element size
    case FEATVIS_DTYPE_FLOAT32: return dispatch_occlude<uint32_t>(x, fill, src, boxes, N, C, H, W, nhwc != 0, out, s);
    case FEATVIS_DTYPE_FLOAT16:
    case FEATVIS_DTYPE_BFLOAT16: return dispatch_occlude<uint16_t>(x, fill, src, boxes, N, C, H, W, nhwc != 0, out, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

extern "C" int featvis_box_accumulate_cuda(const float* values, const int32_t* src, const int32_t* boxes, int64_t N,
                                           int64_t B, int64_t P, int64_t H, int64_t W, float* sums, float* counts,
                                           void* stream) {
  if (bad_dims(N, B, H, W) || P < 0) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t total = B * P * H * W;
  if (total == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  box_accumulate_kernel<<<blocks_for(total), kThreads, 0, s>>>(values, src, boxes, N, P, H, W, total, sums, counts);
  return static_cast<int>(cudaGetLastError());
}

extern "C" int featvis_rise_masks_cuda(const float* grid, const int32_t* shifts, int64_t N, int64_t grid_h,
                                       int64_t grid_w, int64_t up_h, int64_t up_w, int64_t H, int64_t W,
                                       float* masks, void* stream) {
  constexpr int64_t kMaxUp = int64_t(1) << 24;  // pixel coordinates exact in fp32
  if (N < 0 || H < 0 || W < 0 || grid_h < 1 || grid_w < 1 || up_h < H || up_w < W || up_h > kMaxUp ||
      up_w > kMaxUp || grid_h > kMaxUp || grid_w > kMaxUp)
    return static_cast<int>(cudaErrorInvalidValue);
  const int64_t total = N * H * W;
  if (total == 0) return 0;
  // PyTorch's scale: float(in) / out in fp32
  const float scale_h = static_cast<float>(grid_h) / static_cast<float>(up_h);
  const float scale_w = static_cast<float>(grid_w) / static_cast<float>(up_w);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  rise_masks_kernel<<<blocks_for(total), kThreads, 0, s>>>(grid, shifts, total, static_cast<int>(grid_h),
                                                           static_cast<int>(grid_w), scale_h, scale_w, H, W, masks);
  return static_cast<int>(cudaGetLastError());
}

extern "C" int featvis_apply_masks_cuda(const void* x, const void* fill, const float* masks, const int32_t* src,
                                        int64_t N, int64_t C, int64_t H, int64_t W, int nhwc, int dtype, void* out,
                                        void* stream) {
  if (bad_dims(N, C, H, W)) return static_cast<int>(cudaErrorInvalidValue);
  if (N == 0 || C * H * W == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool cl = nhwc != 0;
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32: return dispatch_apply_masks<float>(x, fill, masks, src, N, C, H, W, cl, out, s);
    case FEATVIS_DTYPE_FLOAT16: return dispatch_apply_masks<__half>(x, fill, masks, src, N, C, H, W, cl, out, s);
    case FEATVIS_DTYPE_BFLOAT16:
      return dispatch_apply_masks<__nv_bfloat16>(x, fill, masks, src, N, C, H, W, cl, out, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
