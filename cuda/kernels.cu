// CUDA kernels (see kernels.h). Reductions: a block per row, warp shuffles then one shared-memory
// pass. SGEMM: 64x64 output tiles per 256-thread block, K in steps of 16 through shared memory,
// 4x4 outputs per thread in registers (the classic register-blocked tiling; no tensor cores).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels.h"

namespace fastlm {
namespace cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

void check_launch(const char* what) {
  check(cudaGetLastError(), what);
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

constexpr int kRowThreads = 256;

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t cols, float eps) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
  const float inv = rsqrtf(block_reduce<false>(ss) / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * inv * w[c];
}

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, int64_t cols, float eps) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
  const float mean = block_reduce<false>(s) / float(cols);
  float v = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) v += (xr[c] - mean) * (xr[c] - mean);
  const float inv = rsqrtf(block_reduce<false>(v) / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = (xr[c] - mean) * inv * w[c] + (b ? b[c] : 0.0f);
}

__global__ void softmax_kernel(const float* x, float* y, int64_t cols) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
  m = block_reduce<true>(m);
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += __expf(xr[c] - m);
  const float inv = 1.0f / block_reduce<false>(s);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = __expf(xr[c] - m) * inv;
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = g[i] / (1.0f + __expf(-g[i])) * u[i];
}

__global__ void gelu_tanh_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }
}

// SGEMM tiles: a 256-thread block computes a 64 x 64 tile of y; each thread a 4 x 4 sub-tile.
// As (16 x 64) holds x^T for the K step, Ws (16 x 64) holds W^T: both read along the tile's rows.
constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;

__global__ void __launch_bounds__(256) sgemm_kernel(const float* x, const float* w, const float* bias, float* y,
                                                    int64_t M, int64_t N, int64_t K) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Ws[BK][BN + 4];
  const int tx = threadIdx.x % (BN / TN), ty = threadIdx.x / (BN / TN);  // 16 x 16 threads
  const int64_t m0 = int64_t(blockIdx.y) * BM, n0 = int64_t(blockIdx.x) * BN;
  float acc[TM][TN] = {};
  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    // 64 x 16 elements of x and of W per step: 4 per thread each, coalesced along K
    for (int i = threadIdx.x; i < BM * BK; i += blockDim.x) {
      const int r = i / BK, c = i % BK;
      const int64_t gm = m0 + r, gn = n0 + r, gk = k0 + c;
      As[c][r] = (gm < M && gk < K) ? x[gm * K + gk] : 0.0f;
      Ws[c][r] = (gn < N && gk < K) ? w[gn * K + gk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = As[k][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = Ws[k][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t gm = m0 + ty * TM + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t gn = n0 + tx * TN + j;
      if (gn < N) y[gm * N + gn] = acc[i][j] + (bias ? bias[gn] : 0.0f);
    }
  }
}

int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return int(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp p;
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
}

std::string runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string compiled_archs() { return FASTLM_CUDA_ARCHS; }

void* device_alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return p;
}

void device_free(void* p) { cudaFree(p); }
void copy_to_device(void* dst, const void* src, size_t bytes) { check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to device"); }
void copy_to_host(void* dst, const void* src, size_t bytes) { check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy to host"); }
void synchronize() { check(cudaDeviceSynchronize(), "synchronize"); }

void sgemm(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  const dim3 grid(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM));
  sgemm_kernel<<<grid, 256>>>(x, w, bias, y, M, N, K);
  check_launch("sgemm");
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps) {
  rms_norm_kernel<<<unsigned(rows), kRowThreads>>>(x, w, y, cols, eps);
  check_launch("rms_norm");
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t cols, float eps) {
  layer_norm_kernel<<<unsigned(rows), kRowThreads>>>(x, w, b, y, cols, eps);
  check_launch("layer_norm");
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
  softmax_kernel<<<unsigned(rows), kRowThreads>>>(x, y, cols);
  check_launch("softmax");
}

void add(const float* a, const float* b, float* y, int64_t n) {
  add_kernel<<<grid_for(n, 256), 256>>>(a, b, y, n);
  check_launch("add");
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  silu_mul_kernel<<<grid_for(n, 256), 256>>>(gate, up, y, n);
  check_launch("silu_mul");
}

void gelu_tanh(const float* x, float* y, int64_t n) {
  gelu_tanh_kernel<<<grid_for(n, 256), 256>>>(x, y, n);
  check_launch("gelu_tanh");
}

}  // namespace cuda
}  // namespace fastlm
