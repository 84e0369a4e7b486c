// featvis-fast CUDA kernel for the patch op of exact incremental occlusion (C ABI: patches_cuda.h).
// gather_patches: one thread per output element (grid-stride loop over all windows' tiles in memory
// order, NCHW or NHWC): the element's window, tile position and map position, then one raw 2- or
// 4-byte word from the patch, the base or the pad (an exact copy). Indices are 32-bit when every
// offset fits, 64-bit otherwise.
#include "patches_cuda.h"
#include "featvis_abi.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535 * 4;
constexpr int64_t kInt32Index = 1 << 30;  // below this, offsets (plus a grid stride) fit int32

// T: a raw word of the element size; I: the index type of offsets within out, base and patches.
template <typename T, typename I, bool kNHWC>
__global__ void __launch_bounds__(kThreads)
gather_patches_kernel(const T* __restrict__ base, const int32_t* __restrict__ src,
                      const int32_t* __restrict__ corners, const T* __restrict__ patches, I total, I C, I H, I W,
                      I PH, I PW, I TH, I TW, T pad, T* __restrict__ out) {
  const I size = C * TH * TW;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I e = static_cast<I>(blockIdx.x) * kThreads + static_cast<I>(threadIdx.x); e < total; e += stride) {
    const I n = e / size, off = e % size;
    I c, pix;
    if (kNHWC) {
      c = off % C;
      pix = off / C;
    } else {
      c = off / (TH * TW);
      pix = off % (TH * TW);
    }
    const int32_t* k = corners + 4 * static_cast<int64_t>(n);
    // map coordinates in 64 bits: tile corners may lie anywhere in int32
    const int64_t y = static_cast<int64_t>(__ldg(k)) + pix / TW;
    const int64_t x = static_cast<int64_t>(__ldg(k + 1)) + pix % TW;
    const int64_t ry = y - __ldg(k + 2), rx = x - __ldg(k + 3);
    T v = pad;
    if (ry >= 0 && ry < PH && rx >= 0 && rx < PW) {
      const I py = static_cast<I>(ry), px = static_cast<I>(rx);
      v = __ldg(patches + (kNHWC ? ((n * PH + py) * PW + px) * C + c : ((n * C + c) * PH + py) * PW + px));
    } else if (y >= 0 && y < H && x >= 0 && x < W) {
      const I b = static_cast<I>(__ldg(src + n)), yy = static_cast<I>(y), xx = static_cast<I>(x);
      v = __ldg(base + (kNHWC ? ((b * H + yy) * W + xx) * C + c : ((b * C + c) * H + yy) * W + xx));
    }
    out[e] = v;
  }
}

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <typename T, typename I>
int launch(const void* base, const int32_t* src, const int32_t* corners, const void* patches, int64_t total,
           int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, int64_t TH, int64_t TW, T pad, bool nhwc,
           void* out, cudaStream_t stream) {
  const T* bp = static_cast<const T*>(base);
  const T* pp = static_cast<const T*>(patches);
  T* op = static_cast<T*>(out);
  const int blocks = blocks_for(total);
  if (nhwc)
    gather_patches_kernel<T, I, true><<<blocks, kThreads, 0, stream>>>(
        bp, src, corners, pp, static_cast<I>(total), static_cast<I>(C), static_cast<I>(H), static_cast<I>(W),
        static_cast<I>(PH), static_cast<I>(PW), static_cast<I>(TH), static_cast<I>(TW), pad, op);
  else
    gather_patches_kernel<T, I, false><<<blocks, kThreads, 0, stream>>>(
        bp, src, corners, pp, static_cast<I>(total), static_cast<I>(C), static_cast<I>(H), static_cast<I>(W),
        static_cast<I>(PH), static_cast<I>(PW), static_cast<I>(TH), static_cast<I>(TW), pad, op);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int dispatch(const void* base, const int32_t* src, const int32_t* corners, const void* patches, int64_t N, int64_t B,
             int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, int64_t TH, int64_t TW, T pad, bool nhwc,
             void* out, cudaStream_t stream) {
  const int64_t total = N * C * TH * TW;
  const int64_t largest = total > B * C * H * W ? total : B * C * H * W;
  if (largest < kInt32Index && N * C * PH * PW < kInt32Index)
    return launch<T, int32_t>(base, src, corners, patches, total, C, H, W, PH, PW, TH, TW, pad, nhwc, out, stream);
  return launch<T, int64_t>(base, src, corners, patches, total, C, H, W, PH, PW, TH, TW, pad, nhwc, out, stream);
}

// pad converted to the dtype (round to nearest even), as a raw word.
template <typename T, typename F>
T raw_bits(F value) {
  T bits;
  memcpy(&bits, &value, sizeof(T));
  return bits;
}

}  // namespace

extern "C" int featvis_gather_patches_cuda(const void* base, const int32_t* src, const int32_t* corners,
                                           const void* patches, int64_t N, int64_t B, int64_t C, int64_t H, int64_t W,
                                           int64_t ph, int64_t pw, int64_t tile_h, int64_t tile_w, double pad,
                                           int nhwc, int dtype, void* out, void* stream) {
  if (N < 0 || B < 0 || C < 0 || H < 0 || W < 0 || ph < 0 || pw < 0 || tile_h < 0 || tile_w < 0)
    return static_cast<int>(cudaErrorInvalidValue);
  if (N * C * tile_h * tile_w == 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool cl = nhwc != 0;
  switch (dtype) {
    case FEATVIS_DTYPE_FLOAT32:
      return dispatch<uint32_t>(base, src, corners, patches, N, B, C, H, W, ph, pw, tile_h, tile_w,
                                raw_bits<uint32_t>(static_cast<float>(pad)), cl, out, s);
    case FEATVIS_DTYPE_FLOAT16:
      return dispatch<uint16_t>(base, src, corners, patches, N, B, C, H, W, ph, pw, tile_h, tile_w,
                                raw_bits<uint16_t>(__float2half_rn(static_cast<float>(pad))), cl, out, s);
    case FEATVIS_DTYPE_BFLOAT16:
      return dispatch<uint16_t>(base, src, corners, patches, N, B, C, H, W, ph, pw, tile_h, tile_w,
                                raw_bits<uint16_t>(__float2bfloat16_rn(static_cast<float>(pad))), cl, out, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}
