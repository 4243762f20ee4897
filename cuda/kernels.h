// CUDA variants of the kernels: plain C++ declarations over device pointers (no CUDA types), so
// the bindings compile with the host compiler. Every function launches on the default stream,
// checks the launch, and throws std::runtime_error with CUDA's message on failure. Shapes follow
// the CPU kernels (csrc/kernels/kernels.h): row-major.
//
// The same sources compile twice: with nvcc into fastlm::cuda, and with the host compiler under
// the SIMT emulation (simt.h, FASTLM_SIMT) into fastlm::cuda_emu, where "device" memory is host
// memory and kernels run on fibers: the tests check every kernel's arithmetic that way on machines
// without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/dtype.h"  // element types of device arrays

#ifndef FASTLM_GPU_NS
#define FASTLM_GPU_NS cuda
#endif

namespace fastlm {


namespace FASTLM_GPU_NS {

int device_count();                 // 0 when no device or no driver is visible (never throws)
std::string device_unusable();      // why the kernels cannot run here ("" when they can): no device, or one before sm_80
void require_device();              // std::runtime_error saying why, when device_unusable() says something
std::string device_name(int device);
std::string runtime_version();      // "13.0"
std::string compiled_archs();       // "sm_80 sm_90"

void* device_alloc(size_t bytes);
void device_free(void* p);
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_device(void* dst, const void* src, size_t bytes);
void synchronize();

// Graphs. Between capture_begin() and capture_end(), this thread's kernel launches are recorded,
// not run; capture_end() returns them as a Graph whose replay() runs them all with one launch (a
// CUDA graph; the emulation keeps the launches and runs them in order). Only kernels are
// recorded: copies, allocations and synchronize() throw std::logic_error while capturing, since a
// replay would not repeat them. capture_abort() ends a capture that an error broke off.
class Graph {
 public:
  struct Impl;
  Graph() = default;
  explicit Graph(Impl* impl) : impl_(impl) {}
  ~Graph();
  Graph(Graph&& o) noexcept : impl_(o.impl_) { o.impl_ = nullptr; }
  Graph& operator=(Graph&& o) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  explicit operator bool() const { return impl_ != nullptr; }
  void replay() const;

 private:
  Impl* impl_ = nullptr;
};
void capture_begin();
Graph capture_end();
void capture_abort();
bool capturing();

// y = x @ W^T (+ b): x (M, K), W (N, K), y (M, N); shared-memory tiles, register blocking, fp32 FMA
void sgemm(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
// the same on tensor cores: x and W bf16 or f16 (both the same), fp32 accumulation, y fp32 or
// the input type, bias fp32. K a multiple of 8 (16-byte rows for cp.async). kMma: mma.sync
// (sm_80+); kWgmma: Hopper's warpgroup MMA (bf16, a build for sm_90a on an sm_90 GPU); kAuto:
// wgmma where it runs and has matched mma.sync once on the device, else mma.sync
enum class GemmKernel { kAuto = 0, kMma, kWgmma };
void gemm_tc(const void* x, const void* w, DType in, const float* bias, void* y, DType out, int64_t M, int64_t N,
             int64_t K, GemmKernel kernel = GemmKernel::kAuto);
bool wgmma_built();  // compiled for sm_90a (the emulation: always)
// kAuto's choice for bf16 or int8 inputs, settled (with a check on the device) at the first call
bool wgmma_for_auto(DType in = DType::kBF16);
// int8 tensor cores: acc = x (M, K) int8 @ W (N, K) int8 ^T in int32; y int32 = acc, or fp32 =
// acc * sx[m] * sw[n] (per-row and per-channel scales). K a multiple of 16. kernel as for gemm_tc
// (wgmma: m64n128k32 s8 on Hopper)
void gemm_s8(const int8_t* x, const int8_t* w, const float* sx, const float* sw, void* y, DType out, int64_t M,
             int64_t N, int64_t K, GemmKernel kernel = GemmKernel::kAuto);
// few rows (decode): y = x @ W^T (+ b), x fp32 (M <= 8, K), W fp32 or bf16 (N, K); a warp per
// output column, W read once
void gemv(const float* x, const void* w, DType wt, const float* bias, float* y, int64_t M, int64_t N, int64_t K);

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t cols, float eps);
// the residual step and the next norm in one pass: x += d, then y = norm(x) (rms: w; layer: w, b)
void add_norm(float* x, const float* d, const float* w, const float* b, float* y, int64_t rows, int64_t cols,
              float eps, bool rms);
void softmax(const float* x, float* y, int64_t rows, int64_t cols);
void add(const float* a, const float* b, float* y, int64_t n);
void silu_mul(const float* gate, const float* up, float* y, int64_t n);
void gelu_tanh(const float* x, float* y, int64_t n);
// y[r] = silu(gu[r, :F]) * gu[r, F:] for rows of a fused [gate | up] projection; y (rows, F)
void swiglu_rows(const float* gu, float* y, int64_t rows, int64_t F);
// rows x cols floats from src (row stride ss) to dst (row stride ds), converted to `to`
void copy_rows(const float* src, int64_t ss, void* dst, int64_t ds, int64_t rows, int64_t cols,
               DType to = DType::kF32);
void cast(const void* x, DType from, void* y, DType to, int64_t n);
// out[i] = table[ids[i]] as fp32: table (vocab, hidden) fp32 / bf16 / f16; ids checked on the
// device (an id outside [0, vocab) writes NaN rows and sets *bad = 1 when bad is given)
void embedding(const int32_t* ids, int64_t n, const void* table, DType tt, int64_t vocab, int64_t hidden, float* out,
               int32_t* bad);
// rotary embedding in place on x (rows, heads, head_dim) with the row stride of the CPU kernel:
// row r at position pos[r] (int32); inv_freq[rotary_dim / 2]; interleaved pairs (GPT-J) or halves (NeoX)
void rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const int32_t* pos,
          const float* inv_freq, int64_t rotary_dim, bool interleaved);

// attention of T queries over S keys, fp32, any T (prefill chunks and decode): q (T, H, D) with
// row stride q_stride; k, v (S, Hkv, D) with row strides; query i sees keys [0, S - T + i]
// (causal) or all keys; out (T, H, D). Split-KV: a block per (query, head, key chunk), merged by
// a second pass (ws: workspace of attention_workspace floats)
int attention_splits(int64_t keys);  // key chunks (blocks per query and head) for up to `keys` keys
size_t attention_workspace(int64_t T, int64_t H, int64_t D, int64_t S);
void attention(const float* q, int64_t q_stride, const float* k, const float* v, int64_t kv_stride, float* out,
               int64_t T, int64_t S, int64_t H, int64_t Hkv, int64_t D, float scale, bool causal, float* ws);
// the decoder's attention: each query row t over its own sequence's cache, read on the device:
// keys at caches[t] + offset + j * kv_stride, values v_offset floats further, keys j <= pos[t].
// max_keys bounds every pos[t] + 1 (it sets the split count, so one captured launch serves every
// length up to the next multiple of 512)
// The caches hold cache_dt elements (kF32 or kBF16); offsets and strides count elements
void cached_attention(const float* q, int64_t q_stride, const void* const* caches, DType cache_dt, int64_t offset,
                      int64_t v_offset, int64_t kv_stride, const int32_t* pos, float* out, int64_t T, int64_t max_keys,
                      int64_t H, int64_t Hkv, int64_t D, float scale, float* ws);
// a step's k|v rows (cols floats at src + t * src_stride) into their caches (converted to
// cache_dt), at caches[t] + offset + pos[t] * kv_stride
void store_kv(const float* src, int64_t src_stride, void* const* caches, DType cache_dt, int64_t offset,
              int64_t kv_stride, const int32_t* pos, int64_t T, int64_t cols);
// FlashAttention-2 on tensor cores: q (T, H, D) with row stride q_stride, k, v (S, Hkv, D) with
// row stride kv_stride (elements, multiples of 8), bf16 or f16 (all the same); out (T, H, D)
// contiguous, out_dt bf16, f16 or f32; D 64 or 128; causal as above. block_rows queries per block
// of 4 warps: 64 (16 a warp, Q in registers) or 128 (32 a warp, Q reread from shared memory, each
// K / V fragment used twice); 0: 128 from T = 128 up, else 64. Key tiles of 64 (32 for 128 rows
// at D = 128) double buffered through cp.async, online softmax in registers
void flash_attention(const void* q, int64_t q_stride, const void* k, const void* v, int64_t kv_stride, void* out,
                     DType out_dt, DType dt, int64_t T, int64_t S, int64_t H, int64_t Hkv, int64_t D, float scale,
                     bool causal, int block_rows = 0);

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
