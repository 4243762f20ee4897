// What every file in cuda/ shares: the CUDA headers or, with FASTLM_SIMT, the host emulation
// (simt.h); the launch helper that serves both; error checks; warp and block reductions.
#pragma once

#if defined(FASTLM_SIMT)
#include "simt.h"
#define FASTLM_DYNAMIC_SMEM(T, name) T* name = static_cast<T*>(::simt::dynamic_smem())
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FASTLM_DYNAMIC_SMEM(T, name)                       \
  extern __shared__ __align__(16) unsigned char fastlm_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(fastlm_dynamic_smem_)
#endif

#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "ptx.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
namespace detail {

#if !defined(FASTLM_SIMT)
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}
#endif

#if defined(FASTLM_SIMT)
// the launches this thread is recording (capture_begin), or null
std::vector<std::function<void()>>*& capture_list();
#else
// the stream this thread launches on: the legacy default stream, or its capture stream while
// capturing (capture_begin)
cudaStream_t& launch_stream();
#endif

// kernel<<<grid, block, smem>>>(args...) on the GPU; under FASTLM_SIMT, the same kernel on fibers
template <class... P, class... A>
void launch(const char* what, dim3 grid, dim3 block, size_t smem, void (*kernel)(P...), A... args) {
#if defined(FASTLM_SIMT)
  (void)what;
  auto run = [=] { simt::launch(grid, block, smem, [=] { kernel(P(args)...); }); };
  if (std::vector<std::function<void()>>* list = capture_list())
    list->push_back(run);
  else
    run();
#else
  if (smem > 48 * 1024) check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), what);
  kernel<<<grid, block, smem, launch_stream()>>>(P(args)...);
  check(cudaGetLastError(), what);
#endif
}

// cp.async and 16-byte vector loads need 16-byte aligned addresses: a misaligned one is a sticky
// CUDA error that ends the context, so it is refused here first
inline void need_aligned16(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16)
    throw std::invalid_argument(std::string(what) + " must start at a 16-byte aligned address (make a fresh contiguous copy)");
}

inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// a block-wide reduction of one value per thread (blockDim.x a multiple of 32, at most 1024)
template <bool kMax>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float r = lane < warps ? part[lane] : (kMax ? -INFINITY : 0.0f);
  r = kMax ? warp_max(r) : warp_sum(r);
  __syncthreads();  // part[] is reused by the next call
  return r;
}

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __int_as_float(int(uint32_t(h) << 16)); }
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  const __nv_bfloat16 h = __float2bfloat16(f);
  return *reinterpret_cast<const uint16_t*>(&h);
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return uint32_t(f32_to_bf16(lo)) | (uint32_t(f32_to_bf16(hi)) << 16);
}

// element loads by DType, widened to float
__device__ __forceinline__ float load_as_float(const void* p, int64_t i, DType t) {
  switch (t) {
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: {
      const __half h = static_cast<const __half*>(p)[i];
      return __half2float(h);
    }
    case DType::kI8: return float(static_cast<const int8_t*>(p)[i]);
    case DType::kI32: return float(static_cast<const int32_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_from_float(void* p, int64_t i, DType t, float v) {
  switch (t) {
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::kF16: static_cast<__half*>(p)[i] = __float2half(v); break;
    case DType::kI8: static_cast<int8_t*>(p)[i] = int8_t(fmaxf(-128.0f, fminf(127.0f, rintf(v)))); break;
    case DType::kI32: static_cast<int32_t*>(p)[i] = int32_t(rintf(v)); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

}  // namespace detail
}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
