// the CPU kernels: raw pointers, explicit sizes, row-major, no Python and no model knowledge.
// each ISA's copy (scalar, avx2, avx512) fills one KernelTable; runtime/cpu.cpp picks the table.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastlm {

enum class WeightType : int { kF32 = 0, kBF16 = 1 };

inline size_t weight_type_size(WeightType t) { return t == WeightType::kF32 ? 4 : 2; }

// y = x @ W^T (+ b)
// x: (M, K) row-major, W: (N, K) row-major ("linear" layout, as torch/HF store it), y: (M, N).
// packed weights: ceil(N / nr) panels, each (K, nr) with nr consecutive output columns per k,
// zero-padded past N; element type kept (bf16 panels stay bf16).
struct MatmulArgs {
  const float* x;
  int64_t M, K, N;
  const void* w;  // (N, K) row-major, or packed panels when packed == true
  WeightType wtype;
  bool packed;
  const float* bias;  // (N,) or null
  float* y;
  void* workspace;  // KernelTable::matmul_workspace() bytes, 64-byte aligned
};

// fused attention, online softmax, no (T, S) score matrix in memory.
// q: (H, T, D), k/v: (Hkv, S, D), out: (H, T, D), addressed through strides in elements:
// q[h, t] at q + h * q_head_stride + t * q_row_stride (likewise out); k/v rows are D apart, heads
// kv_head_stride apart (a KV cache with room for more positions than S).
// so (H, T, D) is head_stride = T * D, row_stride = D, and (T, H, D) is D and H * D.
// query t sits at absolute position S - T + t; causal: it sees keys 0 .. S - T + t.
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t H, Hkv, T, S, D;
  int64_t q_head_stride, q_row_stride, kv_head_stride, out_head_stride, out_row_stride;
  float scale;
  bool causal;
};

// int8: per-row symmetric, q = nearbyint(x / s) with s = max|x| / 127, in [-127, 127]
// int8_matmul: y = (qx @ qw^T) * sx[m] * sw[n] (+ b), x quantized per row on the fly
struct Int8MatmulArgs {
  const float* x;
  int64_t M, K, N;
  const int8_t* qw;      // (N, K) row-major
  const float* wscale;   // (N,)
  const float* bias;     // (N,) or null
  float* y;
  void* workspace;       // KernelTable::int8_matmul_workspace() bytes, 64-byte aligned
};

struct KernelTable {
  const char* name;
  int pack_nr;  // panel width of packed fp32/bf16 weights for this ISA
  void (*pack_weight)(const void* w, WeightType wtype, int64_t N, int64_t K, void* packed);
  // row n of a packed weight, as float32 (embedding lookups from a tied, packed head)
  void (*packed_row)(const void* packed, WeightType wtype, int64_t N, int64_t K, int64_t n, float* out);
  size_t (*matmul_workspace)(int64_t M, int64_t N, int64_t K, bool packed);
  void (*matmul)(const MatmulArgs& a);
  void (*attention)(const AttentionArgs& a);
  void (*rms_norm)(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);
  void (*layer_norm)(const float* x, const float* w, const float* b, float* y, int64_t rows,
                     int64_t cols, float eps);
  void (*quantize_int8)(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);
  size_t (*int8_matmul_workspace)(int64_t M, int64_t N, int64_t K);
  void (*int8_matmul)(const Int8MatmulArgs& a);
  // x: (T, H, D) in place, row t at x + t * row_stride (H * D when contiguous, more when the rows
  // sit inside a wider fused q|k|v row); rotates the first rot_dim of each head by pos[t] * inv_freq[i]
  void (*rope)(float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D,
               int64_t rot_dim, const float* inv_freq, bool interleaved);
  void (*gelu_tanh)(const float* x, float* y, int64_t n);
  void (*silu_mul)(const float* gate, const float* up, float* y, int64_t n);
  void (*softmax)(const float* x, float* y, int64_t rows, int64_t cols);
  void (*add)(const float* a, const float* b, float* y, int64_t n);
};

inline int64_t packed_weight_elems(int64_t N, int64_t K, int nr) { return (N + nr - 1) / nr * nr * K; }

namespace scalar { const KernelTable& kernel_table(); }
#if defined(FASTLM_HAVE_AVX2) || defined(FASTLM_ISA_AVX2)
namespace avx2 { const KernelTable& kernel_table(); }
#endif
#if defined(FASTLM_HAVE_AVX512) || defined(FASTLM_ISA_AVX512)
namespace avx512 { const KernelTable& kernel_table(); }
#endif

// scalar references: the test oracles. plain loops, double accumulation where it matters.
namespace ref {
void matmul(const float* x, int64_t M, int64_t K, const void* w, WeightType wtype, int64_t N,
            const float* bias, float* y);
void attention(const AttentionArgs& a);
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows,
                int64_t cols, float eps);
void quantize_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);
void int8_matmul(const Int8MatmulArgs& a);
void rope(float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D,
          int64_t rot_dim,
          const float* inv_freq, bool interleaved);
void gelu_tanh(const float* x, float* y, int64_t n);
void silu_mul(const float* gate, const float* up, float* y, int64_t n);
void softmax(const float* x, float* y, int64_t rows, int64_t cols);
void add(const float* a, const float* b, float* y, int64_t n);
const KernelTable& kernel_table();  // these behind the table interface; no packed weights
}  // namespace ref

}  // namespace fastlm
