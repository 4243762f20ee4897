// Tensor-core GEMMs: y = x @ W^T with x (M, K) and W (N, K) row-major, for bf16 / f16 (fp32
// accumulation, mma.m16n8k16) and int8 (int32 accumulation, mma.m16n8k32). One kernel serves
// all three: a 256-thread block computes a 128 x 128 tile of y, 8 warps of 64 x 32 each; K moves
// 64 bytes of every row at a time (32 bf16 or 64 int8) through a 3-stage cp.async pipeline.
// Shared rows are 64 bytes, four 16-byte chunks stored at chunk ^ ((row / 2) % 4) so the eight
// rows one ldmatrix reads fall in distinct banks.
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
};
struct F16Op {
  using Acc = float;
  static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_f16(d, a, b); }
};
struct S8Op {
  using Acc = int;
  static __device__ __forceinline__ void mma(int d[4], const uint32_t a[4], const uint32_t b[2]) { ptx::mma_s8(d, a, b); }
};

__device__ __forceinline__ int swz(int row, int chunk) { return row * kRowBytes + ((chunk ^ ((row >> 1) & 3)) << 4); }

// the epilogue's per-element transform: bias / scales, then the output type
struct Epilogue {
  const float* bias;  // fp32 GEMMs
  const float* sx;    // int8: per-row scale of x
  const float* sw;    // int8: per-channel scale of W
  DType out;
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
    unsigned char* Bs = As + kTileM * kRowBytes;
    const int64_t kb = kt * kRowBytes;
#pragma unroll
    for (int i = 0; i < 2; ++i) {  // 512 chunks of A and 512 of B, two of each per thread
      const int c = tid + i * kGemmThreads, row = c >> 2, chunk = c & 3;
      const int64_t kbyte = kb + chunk * 16;
      const bool ka = kbyte < row_bytes;
      const int64_t gm = m0 + row, gn = n0 + row;
      const bool va = ka && gm < M, vb = ka && gn < N;
      ptx::cp_async16(As + swz(row, chunk), va ? x + gm * row_bytes + kbyte : x, va);
      ptx::cp_async16(Bs + swz(row, chunk), vb ? w + gn * row_bytes + kbyte : w, vb);
    }
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
        if (m >= M || n >= N) continue;
        if (ep.out == DType::kI32) {
          static_cast<int32_t*>(y)[m * N + n] = int32_t(acc[mt][nt][e]);
          continue;
        }
        float v = float(acc[mt][nt][e]);
        if (ep.sx) v *= ep.sx[m] * ep.sw[n];
        if (ep.bias) v += ep.bias[n];
        store_from_float(y, m * N + n, ep.out, v);
      }
}

template <class Op>
void run_gemm(const char* what, const void* x, const void* w, void* y, Epilogue ep, int64_t M, int64_t N,
              int64_t row_bytes) {
  const dim3 grid(unsigned((N + kTileN - 1) / kTileN), unsigned((M + kTileM - 1) / kTileM));
  launch(what, grid, dim3(kGemmThreads), size_t(kStages) * kStageBytes, gemm_tc_kernel<Op>,
         static_cast<const unsigned char*>(x), static_cast<const unsigned char*>(w), y, ep, M, N, row_bytes);
}

}  // namespace

void gemm_tc(const void* x, const void* w, DType in, const float* bias, void* y, DType out, int64_t M, int64_t N,
             int64_t K) {
  if (K % 8) throw std::invalid_argument("gemm_tc needs K to be a multiple of 8");
  need_aligned16(x, "gemm x");
  need_aligned16(w, "gemm w");
  const Epilogue ep{bias, nullptr, nullptr, out};
  if (in == DType::kBF16)
    run_gemm<Bf16Op>("gemm_tc bf16", x, w, y, ep, M, N, K * 2);
  else if (in == DType::kF16)
    run_gemm<F16Op>("gemm_tc f16", x, w, y, ep, M, N, K * 2);
  else
    throw std::invalid_argument("gemm_tc takes bf16 or f16 inputs");
}

void gemm_s8(const int8_t* x, const int8_t* w, const float* sx, const float* sw, void* y, DType out, int64_t M,
             int64_t N, int64_t K) {
  if (K % 16) throw std::invalid_argument("gemm_s8 needs K to be a multiple of 16");
  need_aligned16(x, "int8_matmul x");
  need_aligned16(w, "int8_matmul w");
  run_gemm<S8Op>("gemm_s8", x, w, y, Epilogue{nullptr, sx, sw, out}, M, N, K);
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
