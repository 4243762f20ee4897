// CUDA kernels (see kernels.h): the device runtime, norms, the element-wise ops, embedding, rope,
// the fp32 SGEMM and the few-row GEMV. Reductions: a block per row, warp shuffles then one
// shared-memory pass. SGEMM: 64x64 output tiles per 256-thread block, K in steps of 16 through
// shared memory, 4x4 outputs per thread in registers (the classic register-blocked tiling).
#include <cstdlib>
#include <cstring>
#include <memory>
#if defined(FASTLM_SIMT)
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>
#endif

#include "common.cuh"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace detail;
namespace {

constexpr int kRowThreads = 256;

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t cols, float eps) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
  const float inv = rsqrtf(block_reduce<false>(ss) / float(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * inv * w[c];
}

// rows of cols % 4 == 0 up to 256 * 4 * V floats: each thread keeps its V float4 in registers, so
// x is read once (16-byte loads) and written once
template <int V>
__global__ void __launch_bounds__(256) rms_norm_vec_kernel(const float* x, const float* w, float* y, int64_t cols,
                                                           float eps) {
  const float4* xr = reinterpret_cast<const float4*>(x + blockIdx.x * cols);
  float4* yr = reinterpret_cast<float4*>(y + blockIdx.x * cols);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const int64_t n4 = cols / 4;
  float4 v[V];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * blockDim.x;
    v[i] = c < n4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
  }
  const float inv = rsqrtf(block_reduce<false>(ss) / float(cols) + eps);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t c = threadIdx.x + int64_t(i) * blockDim.x;
    if (c < n4) {
      const float4 g = w4[c];
      yr[c] = make_float4(v[i].x * inv * g.x, v[i].y * inv * g.y, v[i].z * inv * g.z, v[i].w * inv * g.w);
    }
  }
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

__global__ void add_norm_kernel(float* x, const float* d, const float* w, const float* b, float* y, int64_t cols,
                                float eps, bool rms) {
  float* xr = x + blockIdx.x * cols;
  const float* dr = d + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float s = 0.0f, ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {  // each thread re-reads only what it wrote
    const float v = xr[c] + dr[c];
    xr[c] = v;
    s += v;
    ss += v * v;
  }
  if (rms) {
    const float inv = rsqrtf(block_reduce<false>(ss) / float(cols) + eps);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * inv * w[c];
    return;
  }
  const float mean = block_reduce<false>(s) / float(cols);
  float var = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) var += (xr[c] - mean) * (xr[c] - mean);
  const float inv = rsqrtf(block_reduce<false>(var) / float(cols) + eps);
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

#define FASTLM_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  FASTLM_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* y, int64_t n) {
  FASTLM_GRID_STRIDE(i, n) y[i] = g[i] / (1.0f + __expf(-g[i])) * u[i];
}

__global__ void gelu_tanh_kernel(const float* x, float* y, int64_t n) {
  FASTLM_GRID_STRIDE(i, n) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  }
}

__global__ void swiglu_rows_kernel(const float* gu, float* y, int64_t rows, int64_t F) {
  FASTLM_GRID_STRIDE(i, rows * F) {
    const int64_t r = i / F, c = i % F;
    const float g = gu[r * 2 * F + c];
    y[i] = g / (1.0f + __expf(-g)) * gu[r * 2 * F + F + c];
  }
}

__global__ void copy_rows_kernel(const float* src, int64_t ss, void* dst, int64_t ds, int64_t rows, int64_t cols,
                                 DType to) {
  FASTLM_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, c = i % cols;
    if (to == DType::kF32)
      static_cast<float*>(dst)[r * ds + c] = src[r * ss + c];
    else
      store_from_float(dst, r * ds + c, to, src[r * ss + c]);
  }
}

__global__ void cast_kernel(const void* x, DType from, void* y, DType to, int64_t n) {
  FASTLM_GRID_STRIDE(i, n) store_from_float(y, i, to, load_as_float(x, i, from));
}

// a block per token
__global__ void embedding_kernel(const int32_t* ids, const void* table, DType tt, int64_t vocab, int64_t hidden,
                                 float* out, int32_t* bad) {
  const int32_t id = ids[blockIdx.x];
  float* o = out + int64_t(blockIdx.x) * hidden;
  if (id < 0 || id >= vocab) {
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = NAN;
    if (bad && threadIdx.x == 0) *bad = 1;
    return;
  }
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) o[c] = load_as_float(table, int64_t(id) * hidden + c, tt);
}

// a block per (row, head), a thread per rotated pair; the angle in float32 as Hugging Face
// computes it, its cos / sin in double (fast-math's __sinf is too coarse at large positions)
__global__ void rope_kernel(float* x, int64_t heads, int64_t head_dim, int64_t row_stride, const int32_t* pos,
                            const float* inv_freq, int64_t rotary_dim, bool interleaved) {
  const int64_t r = blockIdx.x / heads, h = blockIdx.x % heads, half = rotary_dim / 2;
  float* xh = x + r * row_stride + h * head_dim;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = float(pos[r]) * inv_freq[i];
    const float c = float(cos(double(angle))), s = float(sin(double(angle)));
    float* p0 = interleaved ? xh + 2 * i : xh + i;
    float* p1 = interleaved ? xh + 2 * i + 1 : xh + i + half;
    const float a = *p0, b = *p1;
    *p0 = a * c - b * s;
    *p1 = b * c + a * s;
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

// the large SGEMM: a 256-thread block computes a 128 x 128 tile of y, each thread 8 x 8 outputs
// (rows ty*4.. and 64+ty*4.., columns tx*4.. and 64+tx*4..: float4 reads of shared memory without
// bank conflicts); K in steps of 8, the next step's tiles loaded (float4, global -> registers)
// while this one computes, shared tiles double buffered: one barrier per step. Rows of x and W
// must be 16-byte aligned (K % 4 == 0); other shapes take the 64 x 64 kernel above.
constexpr int LBM = 128, LBN = 128, LBK = 8;

__global__ void __launch_bounds__(256) sgemm_large_kernel(const float* x, const float* w, const float* bias, float* y,
                                                          int64_t M, int64_t N, int64_t K) {
  __shared__ __align__(16) float As[2][LBK][LBM];
  __shared__ __align__(16) float Ws[2][LBK][LBN];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.y) * LBM, n0 = int64_t(blockIdx.x) * LBN;
  const int lr = tid / 2, lk = (tid % 2) * 4;  // this thread loads row lr, k lk..lk+3 of both tiles
  const bool row_a = m0 + lr < M, row_w = n0 + lr < N;
  const float* xa = x + (m0 + lr) * K;
  const float* wa = w + (n0 + lr) * K;
  auto fetch = [&](const float* row, bool ok, int64_t k) {
    return ok && k < K ? *reinterpret_cast<const float4*>(row + k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  };
  auto stash = [&](float (*dst)[LBM], const float4& v) {
    dst[lk][lr] = v.x, dst[lk + 1][lr] = v.y, dst[lk + 2][lr] = v.z, dst[lk + 3][lr] = v.w;
  };
  float4 ra = fetch(xa, row_a, lk), rw = fetch(wa, row_w, lk);
  stash(As[0], ra);
  stash(Ws[0], rw);
  __syncthreads();
  float acc[8][8] = {};
  const int64_t steps = (K + LBK - 1) / LBK;
  for (int64_t s = 0; s < steps; ++s) {
    const int cur = int(s & 1);
    if (s + 1 < steps) {  // the next step's tiles into registers, in flight during the FMAs
      ra = fetch(xa, row_a, (s + 1) * LBK + lk);
      rw = fetch(wa, row_w, (s + 1) * LBK + lk);
    }
#pragma unroll
    for (int k = 0; k < LBK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][k][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][k][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Ws[cur][k][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Ws[cur][k][64 + tx * 4]);
      const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (s + 1 < steps) {
      stash(As[cur ^ 1], ra);
      stash(Ws[cur ^ 1], rw);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      if (n < N) y[m * N + n] = acc[i][j] + (bias ? bias[n] : 0.0f);
    }
  }
}

// GEMV for up to kGemvRows rows of x: a warp per output column n, lanes striding K (fp32 weights
// four at a time, bf16 eight at a time), x rows from L1/L2; W is read exactly once
constexpr int kGemvRows = 8, kGemvWarps = 8;

template <class WT>
__global__ void __launch_bounds__(256) gemv_kernel(const float* x, const WT* w, const float* bias, float* y, int M,
                                                   int64_t N, int64_t K, bool vec_ok) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const WT* wr = w + n * K;
  float acc[kGemvRows] = {};
  constexpr int kVec = sizeof(WT) == 4 ? 4 : 8;  // 16 bytes of W per lane per step, when rows are 16-byte aligned
  if (vec_ok) {
    for (int64_t k = int64_t(lane) * kVec; k < K; k += 32 * kVec) {
      float wv[kVec];
      if constexpr (sizeof(WT) == 4) {
        const float4 q = *reinterpret_cast<const float4*>(wr + k);
        wv[0] = q.x, wv[1] = q.y, wv[2] = q.z, wv[3] = q.w;
      } else {
        const uint4 q = *reinterpret_cast<const uint4*>(wr + k);
        const unsigned u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          wv[2 * i] = __int_as_float(int(u[i] << 16));
          wv[2 * i + 1] = __int_as_float(int(u[i] & 0xffff0000u));
        }
      }
      for (int m = 0; m < M; ++m) {
        const float* xr = x + m * K + k;
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[m] = fmaf(wv[i], xr[i], acc[m]);
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) {
      float wk;
      if constexpr (sizeof(WT) == 4) {
        wk = wr[k];
      } else {
        wk = bf16_to_f32(wr[k]);
      }
      for (int m = 0; m < M; ++m) acc[m] = fmaf(wk, x[m * K + k], acc[m]);
    }
  }
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0) y[m * N + n] = s + (bias ? bias[n] : 0.0f);
  }
}

}  // namespace

namespace {
// what a replay would not repeat is refused while a graph is being captured
void not_while_capturing(const char* what) {
  if (capturing()) throw std::logic_error(std::string(what) + " while capturing a graph (only kernel launches are recorded)");
}
}  // namespace

#if defined(FASTLM_SIMT)
// emulated device memory ends at an inaccessible page, so a kernel that reads or writes past the
// end of a buffer faults at once instead of reading neighbouring data (16-byte alignment kept)
struct GuardedMapping {
  void* base;
  size_t length;
};
std::mutex& guard_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<void*, GuardedMapping>& guarded() {
  static std::unordered_map<void*, GuardedMapping> m;
  return m;
}

int device_count() { return 1; }
std::string device_name(int) { return "SIMT emulation on the host CPU"; }
std::string runtime_version() { return "emulated"; }
std::string compiled_archs() { return "host"; }
void* device_alloc(size_t bytes) {
  not_while_capturing("device allocation");
  const size_t page = size_t(sysconf(_SC_PAGESIZE)), used = ((bytes ? bytes : 1) + 15) / 16 * 16;
  const size_t span = (used + page - 1) / page * page;
  void* base = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  mprotect(static_cast<char*>(base) + span, page, PROT_NONE);
  void* p = static_cast<char*>(base) + (span - used);
  std::lock_guard<std::mutex> lock(guard_mutex());
  guarded()[p] = {base, span + page};
  return p;
}
void device_free(void* p) {
  std::lock_guard<std::mutex> lock(guard_mutex());
  auto it = guarded().find(p);
  if (it == guarded().end()) return;
  munmap(it->second.base, it->second.length);
  guarded().erase(it);
}
void copy_to_device(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy to device");
  std::memcpy(dst, src, bytes);
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy to host");
  std::memcpy(dst, src, bytes);
}
void copy_device(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy on device");
  std::memmove(dst, src, bytes);
}
void synchronize() { not_while_capturing("synchronize"); }

namespace detail {
std::vector<std::function<void()>>*& capture_list() {
  thread_local std::vector<std::function<void()>>* list = nullptr;
  return list;
}
}  // namespace detail

struct Graph::Impl {
  std::vector<std::function<void()>> launches;
};
Graph::~Graph() { delete impl_; }
void Graph::replay() const {
  if (!impl_) throw std::logic_error("replay of an empty graph");
  for (const auto& run : impl_->launches) run();
}
bool capturing() { return capture_list() != nullptr; }
void capture_begin() {
  if (capturing()) throw std::logic_error("a graph capture is already under way on this thread");
  capture_list() = new std::vector<std::function<void()>>();
}
Graph capture_end() {
  if (!capturing()) throw std::logic_error("capture_end without capture_begin");
  std::unique_ptr<std::vector<std::function<void()>>> list(capture_list());
  capture_list() = nullptr;
  return Graph(new Graph::Impl{std::move(*list)});
}
void capture_abort() {
  delete capture_list();
  capture_list() = nullptr;
}
#else
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
  not_while_capturing("device allocation");
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return p;
}

void device_free(void* p) { cudaFree(p); }
void copy_to_device(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy to device");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "copy to device");
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy to host");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "copy to host");
}
void copy_device(void* dst, const void* src, size_t bytes) {
  not_while_capturing("copy on device");
  check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "copy on device");
}
void synchronize() {
  not_while_capturing("synchronize");
  check(cudaDeviceSynchronize(), "synchronize");
}

namespace detail {
cudaStream_t& launch_stream() {
  thread_local cudaStream_t stream = nullptr;
  return stream;
}
}  // namespace detail

namespace {
// this thread's capture stream, made at its first capture. It only records: graphs replay on the
// legacy default stream, in order with everything else
cudaStream_t capture_stream() {
  thread_local cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    return s;
  }();
  return stream;
}
}  // namespace

struct Graph::Impl {
  cudaGraphExec_t exec;
};
Graph::~Graph() {
  if (impl_) cudaGraphExecDestroy(impl_->exec);
  delete impl_;
}
void Graph::replay() const {
  if (!impl_) throw std::logic_error("replay of an empty graph");
  check(cudaGraphLaunch(impl_->exec, nullptr), "graph launch");
}
bool capturing() { return launch_stream() != nullptr; }
void capture_begin() {
  if (capturing()) throw std::logic_error("a graph capture is already under way on this thread");
  cudaStream_t s = capture_stream();
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin graph capture");
  launch_stream() = s;
}
Graph capture_end() {
  if (!capturing()) throw std::logic_error("capture_end without capture_begin");
  cudaStream_t s = launch_stream();
  launch_stream() = nullptr;
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(s, &graph), "end graph capture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(e, "graph instantiate");
  return Graph(new Graph::Impl{exec});
}
void capture_abort() {
  if (!capturing()) return;
  cudaStream_t s = launch_stream();
  launch_stream() = nullptr;
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // the capture's error, reported already
}
#endif

Graph& Graph::operator=(Graph&& o) noexcept {
  if (this != &o) {
    Graph dead(impl_);
    impl_ = o.impl_;
    o.impl_ = nullptr;
  }
  return *this;
}

// the kernels are built for sm_80 (with its PTX, which later GPUs compile at load) and sm_90a:
// an older GPU has no code to run
std::string device_unusable() {
  if (device_count() == 0) return "no CUDA device is visible";
#if !defined(FASTLM_SIMT)
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    cudaGetLastError();
    return "CUDA device 0 cannot be queried";
  }
  if (p.major < 8)
    return "fastlm's CUDA kernels need compute capability 8.0 or newer (Ampere or later); device 0 is " +
           device_name(0);
#endif
  return "";
}

void require_device() {
  static const std::string why = device_unusable();  // devices do not change while a process runs
  if (!why.empty()) throw std::runtime_error(why + " (fastlm.kernels.cuda.available() is False)");
}

void sgemm(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  const bool aligned = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (aligned && M >= 64 && N >= 64) {
    launch("sgemm", dim3(unsigned((N + LBN - 1) / LBN), unsigned((M + LBM - 1) / LBM)), dim3(256), 0,
           sgemm_large_kernel, x, w, bias, y, M, N, K);
    return;
  }
  launch("sgemm", dim3(unsigned((N + BN - 1) / BN), unsigned((M + BM - 1) / BM)), dim3(256), 0, sgemm_kernel, x, w,
         bias, y, M, N, K);
}

void gemv(const float* x, const void* w, DType wt, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  const bool vec_ok = (K * int64_t(dtype_size(wt))) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  for (int64_t m0 = 0; m0 < M; m0 += kGemvRows) {
    const int rows = int(M - m0 < kGemvRows ? M - m0 : kGemvRows);
    const dim3 grid(unsigned((N + kGemvWarps - 1) / kGemvWarps));
    if (wt == DType::kBF16)
      launch("gemv", grid, dim3(32 * kGemvWarps), 0, gemv_kernel<uint16_t>, x + m0 * K,
             static_cast<const uint16_t*>(w), bias, y + m0 * N, rows, N, K, vec_ok);
    else
      launch("gemv", grid, dim3(32 * kGemvWarps), 0, gemv_kernel<float>, x + m0 * K, static_cast<const float*>(w),
             bias, y + m0 * N, rows, N, K, vec_ok);
  }
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps) {
  const bool aligned = cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  const int64_t per_thread = (cols / 4 + kRowThreads - 1) / kRowThreads;  // float4 per thread
  if (aligned && per_thread <= 8) {
    const dim3 grid(static_cast<unsigned>(rows)), block(kRowThreads);
    if (per_thread <= 1) launch("rms_norm", grid, block, 0, rms_norm_vec_kernel<1>, x, w, y, cols, eps);
    else if (per_thread <= 2) launch("rms_norm", grid, block, 0, rms_norm_vec_kernel<2>, x, w, y, cols, eps);
    else if (per_thread <= 4) launch("rms_norm", grid, block, 0, rms_norm_vec_kernel<4>, x, w, y, cols, eps);
    else launch("rms_norm", grid, block, 0, rms_norm_vec_kernel<8>, x, w, y, cols, eps);
    return;
  }
  launch("rms_norm", dim3(unsigned(rows)), dim3(kRowThreads), 0, rms_norm_kernel, x, w, y, cols, eps);
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t cols, float eps) {
  launch("layer_norm", dim3(unsigned(rows)), dim3(kRowThreads), 0, layer_norm_kernel, x, w, b, y, cols, eps);
}

void add_norm(float* x, const float* d, const float* w, const float* b, float* y, int64_t rows, int64_t cols,
              float eps, bool rms) {
  launch("add_norm", dim3(unsigned(rows)), dim3(kRowThreads), 0, add_norm_kernel, x, d, w, b, y, cols, eps, rms);
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
  launch("softmax", dim3(unsigned(rows)), dim3(kRowThreads), 0, softmax_kernel, x, y, cols);
}

void add(const float* a, const float* b, float* y, int64_t n) {
  launch("add", dim3(blocks_for(n, 256)), dim3(256), 0, add_kernel, a, b, y, n);
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  launch("silu_mul", dim3(blocks_for(n, 256)), dim3(256), 0, silu_mul_kernel, gate, up, y, n);
}

void gelu_tanh(const float* x, float* y, int64_t n) {
  launch("gelu_tanh", dim3(blocks_for(n, 256)), dim3(256), 0, gelu_tanh_kernel, x, y, n);
}

void swiglu_rows(const float* gu, float* y, int64_t rows, int64_t F) {
  launch("swiglu_rows", dim3(blocks_for(rows * F, 256)), dim3(256), 0, swiglu_rows_kernel, gu, y, rows, F);
}

void copy_rows(const float* src, int64_t ss, void* dst, int64_t ds, int64_t rows, int64_t cols, DType to) {
  launch("copy_rows", dim3(blocks_for(rows * cols, 256)), dim3(256), 0, copy_rows_kernel, src, ss, dst, ds, rows, cols,
         to);
}

void cast(const void* x, DType from, void* y, DType to, int64_t n) {
  launch("cast", dim3(blocks_for(n, 256)), dim3(256), 0, cast_kernel, x, from, y, to, n);
}

void embedding(const int32_t* ids, int64_t n, const void* table, DType tt, int64_t vocab, int64_t hidden, float* out,
               int32_t* bad) {
  launch("embedding", dim3(unsigned(n)), dim3(128), 0, embedding_kernel, ids, table, tt, vocab, hidden, out, bad);
}

void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const int32_t* pos,
          const float* inv_freq, int64_t rotary_dim, bool interleaved) {
  launch("rope", dim3(unsigned(rows * heads)), dim3(64), 0, rope_kernel, x, heads, head_dim, row_stride, pos, inv_freq,
         rotary_dim, interleaved);
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
