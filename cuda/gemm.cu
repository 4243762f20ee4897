// Tensor-core GEMMs: y = x @ W^T with x (M, K) and W (N, K) row-major, for bf16 / f16 (fp32
// accumulation, mma.m16n8k16) and int8 (int32 accumulation, mma.m16n8k32). One kernel serves
// all three: a 256-thread block computes a 128 x 128 tile of y, 8 warps of 64 x 32 each; K moves
// 64 bytes of every row at a time (32 bf16 or 64 int8) through a 3-stage cp.async pipeline.
// Shared rows are 64 bytes, four 16-byte chunks stored at chunk ^ ((row / 2) % 4) so the eight
// rows one ldmatrix reads fall in distinct banks.
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.cuh"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace detail;
namespace {

constexpr int kTileM = 128, kTileN = 128, kRowBytes = 64, kStages = 3, kGemmThreads = 256;
constexpr int kStageBytes = (kTileM + kTileN) * kRowBytes;

struct Bf16Op {
  using Acc = float;
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_bf16(d, a, b); }
  static __device__ __forceinline__ void wgmma(float d[64], uint64_t a, uint64_t b) {
    ptx::wgmma_m64n128k16_bf16(d, a, b, true);
  }
};
struct F16Op {
  using Acc = float;
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_f16(d, a, b); }
};
struct S8Op {
  using Acc = int;
  static __device__ __forceinline__ void mma(int d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_s8(d, a, b); }
  static __device__ __forceinline__ void wgmma(int d[64], uint64_t a, uint64_t b) { ptx::wgmma_m64n128k32_s8(d, a, b, true); }
};

__device__ __forceinline__ int swz(int row, int chunk) { return row * kRowBytes + ((chunk ^ ((row >> 1) & 3)) << 4); }

// the epilogue's per-element transform: bias / scales, then the output type
struct Epilogue {
  const float* bias;  // fp32 GEMMs
  const float* sx;    // int8: per-row scale of x
  const float* sw;    // int8: per-channel scale of W
  DType out;
};

// y[m, n] from its accumulator: int32 as it is, else through float with scales and bias
template <class Acc>
__device__ __forceinline__ void store_result(void* y, const Epilogue& ep, int64_t m, int64_t n, int64_t N, Acc acc) {
  if (ep.out == DType::kI32) {
    static_cast<int32_t*>(y)[m * N + n] = int32_t(acc);
    return;
  }
  float v = float(acc);
  if (ep.sx) v *= ep.sx[m] * ep.sw[n];
  if (ep.bias) v += ep.bias[n];
  store_from_float(y, m * N + n, ep.out, v);
}

// one K step of both 128-row operand tiles through cp.async (256 threads): kChunks 16-byte chunks
// a row, chunk c of row r stored at offset at(r, c); rows past M / N and bytes past the row are
// zero-filled
template <int kChunks, class Swz>
__device__ __forceinline__ void load_tiles(unsigned char* As, unsigned char* Bs, const unsigned char* x,
                                           const unsigned char* w, int64_t m0, int64_t n0, int64_t kb, int64_t M,
                                           int64_t N, int64_t row_bytes, Swz at) {
#pragma unroll
  for (int i = 0; i < 128 * kChunks / 256; ++i) {
    const int c = threadIdx.x + i * 256, row = c / kChunks, chunk = c % kChunks;
    const int64_t kbyte = kb + chunk * 16;
    const bool ka = kbyte < row_bytes;
    const int64_t gm = m0 + row, gn = n0 + row;
    const bool va = ka && gm < M, vb = ka && gn < N;
    ptx::cp_async16(As + at(row, chunk), va ? x + gm * row_bytes + kbyte : x, va);
    ptx::cp_async16(Bs + at(row, chunk), vb ? w + gn * row_bytes + kbyte : w, vb);
  }
}

struct Swz64 {  // 64-byte rows
  __device__ __forceinline__ int operator()(int row, int chunk) const { return swz(row, chunk); }
};

template <class Op>
__global__ void __launch_bounds__(kGemmThreads) gemm_tc_kernel(const unsigned char* x, const unsigned char* w,
                                                               void* y, Epilogue ep, int64_t M, int64_t N,
                                                               int64_t row_bytes) {
  using Acc = typename Op::Acc;
  FASTLM_DYNAMIC_SMEM(unsigned char, smem);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps
  const int64_t m0 = int64_t(blockIdx.y) * kTileM, n0 = int64_t(blockIdx.x) * kTileN;
  const int64_t k_tiles = (row_bytes + kRowBytes - 1) / kRowBytes;

  auto load_stage = [&](int stage, int64_t kt) {
    unsigned char* As = smem + stage * kStageBytes;
    load_tiles<kRowBytes / 16>(As, As + kTileM * kRowBytes, x, w, m0, n0, kt * kRowBytes, M, N, row_bytes, Swz64());
  };


  Acc acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = Acc(0);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    ptx::cp_async_commit();
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) load_stage(int(next % kStages), next);
    ptx::cp_async_commit();
    const unsigned char* As = smem + int(kt % kStages) * kStageBytes;
    const unsigned char* Bs = As + kTileM * kRowBytes;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {  // two 32-byte k steps per stage
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int row = wm * 64 + mt * 16 + (lane & 15);
        ptx::ldmatrix_x4(a[mt], As + swz(row, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        const int row = wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t r[4];
        ptx::ldmatrix_x4(r, Bs + swz(row, ks * 2 + ((lane >> 3) & 1)));
        b[2 * np][0] = r[0], b[2 * np][1] = r[1], b[2 * np + 1][0] = r[2], b[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) Op::mma(acc[mt][nt], a[mt], b[nt]);
    }
  }
  ptx::cp_async_wait<0>();

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t m = m0 + wm * 64 + mt * 16 + g + (e >> 1) * 8;
        const int64_t n = n0 + wn * 32 + nt * 8 + 2 * t + (e & 1);
        if (m < M && n < N) store_result(y, ep, m, n, N, acc[mt][nt][e]);
      }
}

// ---- Hopper: wgmma ----
// A 256-thread block, two warpgroups, computes a 128 x 128 tile of y: warpgroup g the rows 64 g ..
// 64 g + 63 with wgmma from shared memory (m64n128k16 bf16, or m64n128k32 s8: 32 bytes of K either
// way). K moves 128 bytes of every row (64 bf16 or 128 int8) a step through a 4-stage cp.async
// pipeline; each operand tile is 128 rows of 128 bytes in the 128-byte swizzle (chunk c of row r
// at c ^ (r % 8)), which the wgmma descriptors name.
constexpr int kWgStages = 4, kWgTileBytes = 128 * 128, kWgStageBytes = 2 * kWgTileBytes;

struct Swz128 {  // 128-byte rows, the wgmma 128-byte swizzle
  __device__ __forceinline__ int operator()(int row, int chunk) const { return row * 128 + ((chunk ^ (row & 7)) << 4); }
};

template <class Op>
__global__ void __launch_bounds__(256) gemm_wgmma_kernel(const unsigned char* x, const unsigned char* w, void* y,
                                                         Epilogue ep, int64_t M, int64_t N, int64_t row_bytes) {
  FASTLM_DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* smem = raw + ((1024 - (ptx::shared_address(raw) & 1023)) & 1023);  // swizzle atoms: 1024-aligned
  const int tid = threadIdx.x, wg = tid >> 7;
  const int64_t m0 = int64_t(blockIdx.y) * 128, n0 = int64_t(blockIdx.x) * 128;
  const int64_t k_tiles = (row_bytes + 127) / 128;

  auto load_stage = [&](int stage, int64_t kt) {
    unsigned char* As = smem + stage * kWgStageBytes;
    load_tiles<8>(As, As + kWgTileBytes, x, w, m0, n0, kt * 128, M, N, row_bytes, Swz128());
  };


  typename Op::Acc acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0;
  // loads run kLoadAhead tiles ahead, and one step's wgmma batch stays in flight while the next
  // step waits for its tile: the stage a load refills was last read two steps back, by a batch
  // that every warpgroup has waited for before the barrier that precedes the load
  constexpr int kLoadAhead = kWgStages - 2;
#pragma unroll
  for (int s = 0; s < kLoadAhead; ++s) {
    if (s < k_tiles) load_stage(s, s);
    ptx::cp_async_commit();
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    ptx::cp_async_wait<kLoadAhead - 1>();
    ptx::fence_proxy_async();  // cp.async wrote through the generic proxy; the tensor cores read next
    __syncthreads();           // also: every warpgroup is done with the stage the next load overwrites
    const int64_t next = kt + kLoadAhead;
    if (next < k_tiles) load_stage(int(next % kWgStages), next);
    ptx::cp_async_commit();
    const unsigned char* As = smem + int(kt % kWgStages) * kWgStageBytes + wg * 64 * 128;
    const unsigned char* Bs = smem + int(kt % kWgStages) * kWgStageBytes + kWgTileBytes;
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)  // 32 bytes of K each (16 bf16 or 32 int8)
      Op::wgmma(acc, ptx::wgmma_desc_sw128(As + ks * 32), ptx::wgmma_desc_sw128(Bs + ks * 32));
    ptx::wgmma_commit();
    ptx::wgmma_wait<1>();  // the previous step's batch is done; this one runs on
  }
  ptx::wgmma_wait<0>();
  ptx::cp_async_wait<0>();

  const int wt = tid & 127, wr = wt >> 5, g = (wt & 31) >> 2, t = wt & 3;
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int j = i >> 2, e = i & 3;
    const int64_t m = m0 + wg * 64 + wr * 16 + g + (e >> 1) * 8;
    const int64_t n = n0 + j * 8 + 2 * t + (e & 1);
    if (m < M && n < N) store_result(y, ep, m, n, N, acc[i]);
  }
}

template <class Op>
void run_wgmma(const char* what, const void* x, const void* w, void* y, Epilogue ep, int64_t M, int64_t N,
               int64_t row_bytes) {
  const dim3 grid(unsigned((N + 127) / 128), unsigned((M + 127) / 128));
  launch(what, grid, dim3(256), size_t(kWgStages) * kWgStageBytes + 1024, gemm_wgmma_kernel<Op>,
         static_cast<const unsigned char*>(x), static_cast<const unsigned char*>(w), y, ep, M, N, row_bytes);
}

template <class Op>
void run_gemm(const char* what, const void* x, const void* w, void* y, Epilogue ep, int64_t M, int64_t N,
              int64_t row_bytes) {
  const dim3 grid(unsigned((N + kTileN - 1) / kTileN), unsigned((M + kTileM - 1) / kTileM));
  launch(what, grid, dim3(kGemmThreads), size_t(kStages) * kStageBytes, gemm_tc_kernel<Op>,
         static_cast<const unsigned char*>(x), static_cast<const unsigned char*>(w), y, ep, M, N, row_bytes);
}

}  // namespace

bool wgmma_built() {
#if defined(FASTLM_SIMT)
  return true;
#else
  return std::string(FASTLM_CUDA_ARCHS).find("sm_90a") != std::string::npos;
#endif
}

namespace {

// wgmma runs here: a build for sm_90a on an sm_90 GPU (the emulation: always)
bool on_hopper() {
#if defined(FASTLM_SIMT)
  return true;
#else
  int dev = 0;
  cudaDeviceProp p;
  if (!wgmma_built() || cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return p.major == 9;
#endif
}

void need_hopper(const char* what) {
  if (!on_hopper()) throw std::invalid_argument(std::string(what) + " needs a Hopper GPU (sm_90) and a build for sm_90a");
}

#if !defined(FASTLM_SIMT)
// the wgmma and mma.sync kernels of one operand type on a fixed 256^3 problem on the device: bf16
// within rounding of each other, int8 identical (exact int32 sums)
template <class Op>
bool wgmma_matches_mma() {
  constexpr bool s8 = std::is_same<typename Op::Acc, int>::value;
  const int64_t n = 256;
  const size_t es = s8 ? 1 : 2;
  std::vector<unsigned char> a(size_t(n * n) * es), b(size_t(n * n) * es);
  uint32_t r = 12345;
  for (auto* v : {&a, &b})
    for (size_t i = 0; i < v->size(); i += es) {
      r = r * 1664525u + 1013904223u;
      const uint16_t h = s8 ? uint16_t(r >> 24) : uint16_t(0x3c00 | ((r >> 16) & 0x807f));  // bf16 in +-[0.0078, 0.0156)
      std::memcpy(&(*v)[i], &h, es);
    }
  void *da = device_alloc(a.size()), *db = device_alloc(b.size()), *y1 = device_alloc(size_t(n * n) * 4),
       *y2 = device_alloc(size_t(n * n) * 4);
  copy_to_device(da, a.data(), a.size());
  copy_to_device(db, b.data(), b.size());
  const Epilogue ep{nullptr, nullptr, nullptr, s8 ? DType::kI32 : DType::kF32};
  run_gemm<Op>("gemm check (mma.sync)", da, db, y1, ep, n, n, n * int64_t(es));
  run_wgmma<Op>("gemm check (wgmma)", da, db, y2, ep, n, n, n * int64_t(es));
  std::vector<float> h1(size_t(n * n)), h2(size_t(n * n));  // int32 bits when s8
  copy_to_host(h1.data(), y1, h1.size() * 4);
  copy_to_host(h2.data(), y2, h2.size() * 4);
  for (void* q : {da, db, y1, y2}) device_free(q);
  if (s8) return std::memcmp(h1.data(), h2.data(), h1.size() * 4) == 0;
  float worst = 0.0f, scale = 0.0f;
  for (size_t i = 0; i < h1.size(); ++i) {
    worst = fmaxf(worst, fabsf(h1[i] - h2[i]));
    scale = fmaxf(scale, fabsf(h1[i]));
  }
  return worst <= 1e-4f * scale;
}
#endif

}  // namespace

// the wgmma kernels serve "auto" on a Hopper GPU of a build for sm_90a, each once it has matched
// the mma.sync kernel of its type on the device: a kernel that no GPU has checked never answers
// silently
bool wgmma_for_auto(DType in) {
#if defined(FASTLM_SIMT)
  (void)in;
  return false;  // the emulation checks each kernel by name
#else
  if (in != DType::kBF16 && in != DType::kI8) return false;
  static int state[2] = {-1, -1};  // bf16, int8
  int& st = state[in == DType::kI8];
  if (st >= 0) return st == 1;
  st = 0;
  if (!on_hopper()) return false;
  st = (in == DType::kI8 ? wgmma_matches_mma<S8Op>() : wgmma_matches_mma<Bf16Op>()) ? 1 : 0;
  if (!st)
    fprintf(stderr, "fastlm: the %s wgmma GEMM disagrees with the mma.sync GEMM on this GPU; using mma.sync\n",
            in == DType::kI8 ? "int8" : "bf16");
  return st == 1;
#endif
}

void gemm_tc(const void* x, const void* w, DType in, const float* bias, void* y, DType out, int64_t M, int64_t N,
             int64_t K, GemmKernel kernel) {
  if (K % 8) throw std::invalid_argument("gemm_tc needs K to be a multiple of 8");
  need_aligned16(x, "gemm x");
  need_aligned16(w, "gemm w");
  const Epilogue ep{bias, nullptr, nullptr, out};
  if (kernel == GemmKernel::kWgmma) {
    if (in != DType::kBF16) throw std::invalid_argument("the wgmma GEMM takes bf16 (or int8: int8_matmul)");
    need_hopper("the wgmma GEMM");
    run_wgmma<Bf16Op>("gemm_tc wgmma", x, w, y, ep, M, N, K * 2);
  } else if (kernel == GemmKernel::kAuto && in == DType::kBF16 && wgmma_for_auto(in)) {
    run_wgmma<Bf16Op>("gemm_tc wgmma", x, w, y, ep, M, N, K * 2);
  } else if (in == DType::kBF16) {
    run_gemm<Bf16Op>("gemm_tc bf16", x, w, y, ep, M, N, K * 2);
  } else if (in == DType::kF16) {
    run_gemm<F16Op>("gemm_tc f16", x, w, y, ep, M, N, K * 2);
  } else {
    throw std::invalid_argument("gemm_tc takes bf16 or f16 inputs");
  }
}

void gemm_s8(const int8_t* x, const int8_t* w, const float* sx, const float* sw, void* y, DType out, int64_t M,
             int64_t N, int64_t K, GemmKernel kernel) {
  if (K % 16) throw std::invalid_argument("gemm_s8 needs K to be a multiple of 16");
  need_aligned16(x, "int8_matmul x");
  need_aligned16(w, "int8_matmul w");
  const Epilogue ep{nullptr, sx, sw, out};
  if (kernel == GemmKernel::kWgmma) need_hopper("the int8 wgmma GEMM");
  if (kernel == GemmKernel::kWgmma || (kernel == GemmKernel::kAuto && wgmma_for_auto(DType::kI8)))
    run_wgmma<S8Op>("gemm_s8 wgmma", x, w, y, ep, M, N, K);
  else
    run_gemm<S8Op>("gemm_s8", x, w, y, ep, M, N, K);
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
