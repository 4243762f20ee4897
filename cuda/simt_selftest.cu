// Kernels that hold the SIMT emulation itself to the CUDA semantics the real kernels rely on
// (compiled only under the emulation, into cuda/emulated.cpp); fastlm.kernels.cuda_emulated._self_test
// reports what they observed.
#include "common.cuh"
#include "simt_selftest.h"

#include <algorithm>
#include <string>

namespace fastlm {
namespace FASTLM_GPU_NS {
namespace {

__global__ void divergent_barrier_kernel() {
  if ((threadIdx.x & 31) < 16)
    __syncthreads();
  else
    __syncwarp();
}

__global__ void cp_async_kernel(const float* src, float* before, float* after) {
  __shared__ __align__(16) float tile[4];
  if (threadIdx.x == 0) tile[0] = tile[1] = tile[2] = tile[3] = -1.0f;
  __syncthreads();
  if (threadIdx.x == 0) {
    ptx::cp_async16(tile, src, true);
    ptx::cp_async_commit();
    for (int i = 0; i < 4; ++i) before[i] = tile[i];  // not waited for: still the old values
    ptx::cp_async_wait<0>();
    for (int i = 0; i < 4; ++i) after[i] = tile[i];
  }
}

__global__ void shuffle_kernel(float* out) {
  const float v = float(threadIdx.x);
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, v, 1) + 100.0f * detail::warp_sum(v);
}

// a wgmma's operands refilled by cp.async before the wgmma is waited for: a race on the hardware
__global__ void wgmma_race_kernel(const unsigned char* src, float* out) {
  FASTLM_DYNAMIC_SMEM(unsigned char, smem);
  float acc[64] = {};
  ptx::wgmma_fence();
  ptx::wgmma_m64n128k16_bf16(acc, ptx::wgmma_desc_sw128(smem), ptx::wgmma_desc_sw128(smem + 64 * 128), false);
  ptx::wgmma_commit();
  ptx::cp_async16(smem + 16 * threadIdx.x, src, true);  // the next tile, too early
  ptx::cp_async_commit();
  ptx::wgmma_wait<0>();
  ptx::cp_async_wait<0>();
  out[threadIdx.x] = acc[0];
}

// warp 0 reads a tile while warp 1 refills it, with no barrier between: a race
__global__ void ldmatrix_race_kernel(const unsigned char* src, float* out) {
  FASTLM_DYNAMIC_SMEM(unsigned char, smem);
  if (threadIdx.x < 32) {
    uint32_t r[4];
    ptx::ldmatrix_x4(r, smem + 16 * threadIdx.x);
    out[threadIdx.x] = float(r[0]);
  } else {
    ptx::cp_async16(smem + 16 * (threadIdx.x - 32), src, true);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
  }
}

}  // namespace

// what a call raised ("not raised" when it returned)
template <class F>
std::string raised(F f) {
  try {
    f();
    return "not raised";
  } catch (const std::exception& e) {
    return e.what();
  }
}

SimtSelfTest simt_self_test() {
  SimtSelfTest r;
  const float src[4] = {1, 2, 3, 4};
  const unsigned char zeros[16] = {};
  float before[4], after[4], shuf[64], out[128];
  r.deadlock = raised([] { detail::launch("divergent barrier", dim3(1), dim3(64), 0, divergent_barrier_kernel); });
  detail::launch("cp.async", dim3(1), dim3(32), 0, cp_async_kernel, static_cast<const float*>(src),
                 static_cast<float*>(before), static_cast<float*>(after));
  r.cp_async_before_wait = std::vector<float>(before, before + 4);
  r.cp_async_after_wait = std::vector<float>(after, after + 4);
  detail::launch("shuffle", dim3(1), dim3(64), 0, shuffle_kernel, static_cast<float*>(shuf));
  r.shuffle = std::vector<float>(shuf, shuf + 64);
  r.wgmma_race = raised([&] {
    detail::launch("wgmma race", dim3(1), dim3(128), size_t(192 * 128), wgmma_race_kernel,
                   static_cast<const unsigned char*>(zeros), static_cast<float*>(out));
  });
  r.ldmatrix_race = raised([&] {
    detail::launch("ldmatrix race", dim3(1), dim3(64), size_t(512), ldmatrix_race_kernel,
                   static_cast<const unsigned char*>(zeros), static_cast<float*>(out));
  });

  // a captured launch runs at replay, not before; a copy while capturing is refused
  float graphed[64];
  std::fill(graphed, graphed + 64, -1.0f);
  capture_begin();
  detail::launch("shuffle", dim3(1), dim3(64), 0, shuffle_kernel, static_cast<float*>(graphed));
  r.copy_while_capturing = raised([&] { copy_to_device(graphed, src, sizeof src); });
  Graph g = capture_end();
  r.graph_before_replay = std::vector<float>(graphed, graphed + 64);
  g.replay();
  r.graph_after_replay = std::vector<float>(graphed, graphed + 64);
  return r;
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
