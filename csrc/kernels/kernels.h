// the CPU kernels: raw pointers, explicit sizes, row-major, no Python and no model knowledge.
// each ISA's copy (scalar, avx2, avx512) fills one KernelTable; kernels/dispatch.cpp picks the table.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/dtype.h"

namespace fastlm {


// y = x @ W^T (+ b)
// x: (M, K) row-major, W: (N, K) row-major ("linear" layout, as torch/HF store it), y: (M, N).
// packed weights: ceil(N / nr) panels, each (K, nr) with nr consecutive output columns per k,
// zero-padded past N; element type kept (bf16 panels stay bf16).
struct MatmulArgs {
  const float* x;
  int64_t M, K, N;
  const void* w;  // (N, K) row-major, or packed panels when packed == true
  DType wtype;
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
// query t sits at absolute position S - T + t; causal: it sees keys 0 .. S - T + t, and with a
// sliding window W > 0 only the last W of them (keys p - W + 1 .. p for position p, as
// transformers' sliding_window_overlay: kv_idx > q_idx - W).
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t H, Hkv, T, S, D;
  int64_t q_head_stride, q_row_stride, kv_head_stride, out_head_stride, out_row_stride;
  float scale;
  bool causal;
  int64_t window = 0;    // 0: none (causal only)
  float softcap = 0.0f;  // > 0: each scaled score s becomes softcap * tanh(s / softcap) (Gemma 2)
};

// a quantized linear weight (N, K) in groups of G (32, 64 or 128) along K, one record per row:
//   q8: Kp int8 quants, then Kp / G fp16 scales                         w = d * q, q in [-127, 127]
//   q4: Kp / 2 bytes of 4-bit quants, then Kp / G fp16 scales, then Kp / G fp16 minimums
//                                                                       w = d * q + m, q in [0, 15]
// Kp = K rounded up to a multiple of G (q4: of 64 too); the padding holds zeros. q4 packs each 64
// elements into 32 bytes: byte j holds element j in its low nibble and element 32 + j in its high
// one, so one 32-byte load and two masks give two whole 32-element blocks in order (ggml's Q4_0 /
// Q4_1 pack each 32 into 16 bytes instead: their nibbles are reshuffled at load, no float round
// trip). a q8 group of 32 is ggml's Q8_0 block. records are byte-packed: fp16 fields may sit at
// odd addresses.
enum class QType : int { kQ8 = 0, kQ4 = 1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K, kIQ4_NL, kIQ4_XS };

// the GGUF block types (kernels/ggml_blocks.h), kept in the file's own bits: a record is a row of
// K / qk blocks exactly as the file stores it (K a multiple of qk; G is qk)
struct GgmlTypeInfo {
  int64_t qk;      // elements per block
  int64_t bytes;   // bytes per block
  int sub;         // elements per sub-block (one scale)
  bool is_signed;  // the quants are signed lookup values (IQ4), no minimum
  const char* name;
};

constexpr GgmlTypeInfo ggml_type_info(QType t) {
  switch (t) {
    case QType::kQ5_0: return {32, 22, 32, false, "q5_0"};
    case QType::kQ5_1: return {32, 24, 32, false, "q5_1"};
    case QType::kQ2_K: return {256, 84, 16, false, "q2_k"};
    case QType::kQ3_K: return {256, 110, 16, false, "q3_k"};
    case QType::kQ4_K: return {256, 144, 32, false, "q4_k"};
    case QType::kQ5_K: return {256, 176, 32, false, "q5_k"};
    case QType::kQ6_K: return {256, 210, 16, false, "q6_k"};
    case QType::kIQ4_NL: return {32, 18, 32, true, "iq4_nl"};
    case QType::kIQ4_XS: return {256, 136, 32, true, "iq4_xs"};
    default: return {0, 0, 0, false, nullptr};
  }
}
constexpr bool q_is_ggml(QType t) { return ggml_type_info(t).qk > 0; }

struct QWeight {
  const uint8_t* data;  // N records of q_row_bytes(type, K, G)
  QType type;
  int64_t N, K, G;
  const float* bias;  // (N,) or null
};

inline int64_t q_padded_k(QType t, int64_t K, int64_t G) {
  if (q_is_ggml(t)) return K;
  const int64_t unit = t == QType::kQ4 && G < 64 ? 64 : G;
  return (K + unit - 1) / unit * unit;
}
inline int64_t q_row_bytes(QType t, int64_t K, int64_t G) {
  const GgmlTypeInfo g = ggml_type_info(t);
  if (g.qk > 0) return K / g.qk * g.bytes;
  const int64_t kp = q_padded_k(t, K, G), groups = kp / G;
  return t == QType::kQ8 ? kp + 2 * groups : kp / 2 + 4 * groups;
}

// y[m, off_p + n] = sum_k x[m, k] w_p[n, k] (+ b_p[n]) for each part p, outputs side by side
// (off_p = the rows of the parts before p; fused q|k|v or gate|up in one call; the parts share
// one type). x: (M, K), y: (M, ldy). x is quantized on the fly: against q8 weights to int16 with
// one scale per row (a step of max|x| / 32767 keeps the outliers of real models harmless), against
// q4 and the GGUF block types to int8 with one scale per 32 elements (like ggml's Q8_0). more
// than 16 rows (prefill) dequantize the weights panel by panel into the float GEMM instead (float
// activations).
struct QMatmulArgs {
  const float* x;
  int64_t M, K;
  const QWeight* parts;
  int n_parts;
  float* y;
  int64_t ldy;
};

// the ops of a kernel table, each once: X(name, return type, (parameters)). this list generates
// the table's members (below), every ISA's declarations (isa.h) and tables (table.cpp) and the
// reference table (ref.cpp): an op is added here and in its implementations, nowhere else, and
// the tables are filled by name, never by position.
#define FASTLM_KERNEL_OPS(X)                                                                          \
  /* packed weights: ceil(N / pack_nr) panels of (K, pack_nr) */                                    \
  X(pack_weight, void, (const void* w, DType wtype, int64_t N, int64_t K, void* packed))            \
  /* row n of a packed weight as float32 (embedding lookups from a tied, packed head) */            \
  X(packed_row, void, (const void* packed, DType wtype, int64_t N, int64_t K, int64_t n, float* out)) \
  X(matmul_workspace, size_t, (int64_t M, int64_t N, int64_t K, bool packed))                       \
  X(matmul, void, (const MatmulArgs& a))                                                            \
  X(attention, void, (const AttentionArgs& a))                                                      \
  X(rms_norm, void, (const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps)) \
  X(layer_norm, void,                                                                               \
    (const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t cols, float eps)) \
  /* x: (T, H, D) in place, row t at x + t * row_stride (H * D when contiguous, more inside a */    \
  /* fused q|k|v row); rotates the first rot_dim of each head by pos[t] * inv_freq[i] */            \
  X(rope, void,                                                                                     \
    (float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D, int64_t rot_dim, \
     const float* inv_freq, bool interleaved))                                                      \
  X(gelu_tanh, void, (const float* x, float* y, int64_t n))                                         \
  X(silu_mul, void, (const float* gate, const float* up, float* y, int64_t n))                      \
  X(gelu_mul, void, (const float* gate, const float* up, float* y, int64_t n)) /* GeGLU, tanh gelu */ \
  X(softmax, void, (const float* x, float* y, int64_t rows, int64_t cols))                          \
  X(add, void, (const float* a, const float* b, float* y, int64_t n))                               \
  /* w: (N, K) float32 -> N records (see QWeight), round to nearest with the group's range: */      \
  /* q8 d = fp16(max|w| / 127); q4 m = fp16(min w), d = fp16((max w - m) / 15) */                   \
  X(q_quantize, void, (const float* w, int64_t N, int64_t K, QType type, int64_t G, uint8_t* out))  \
  X(q_dequantize_row, void, (const QWeight& w, int64_t n, float* out)) /* row n, K floats */        \
  X(q_matmul, void, (const QMatmulArgs& a))

#define FASTLM_TABLE_MEMBER(op, ret, params) ret(*op) params;
#define FASTLM_DECLARE_OP(op, ret, params) ret op params;
#define FASTLM_TABLE_ENTRY(op, ret, params) t.op = op;
// the table of the ops declared in the current namespace (an ISA's, or ref), filled by name
#define FASTLM_KERNEL_TABLE(isa_name, nr)   \
  [] {                                      \
    KernelTable t{};                        \
    t.name = isa_name;                      \
    t.pack_nr = nr;                         \
    FASTLM_KERNEL_OPS(FASTLM_TABLE_ENTRY)   \
    return t;                               \
  }()

struct KernelTable {
  const char* name;
  int pack_nr;  // panel width of packed fp32/bf16 weights for this ISA
  FASTLM_KERNEL_OPS(FASTLM_TABLE_MEMBER)
};

inline int64_t packed_weight_elems(int64_t N, int64_t K, int nr) { return (N + nr - 1) / nr * nr * K; }

namespace scalar { const KernelTable& kernel_table(); }
#if defined(FASTLM_HAVE_AVX2) || defined(FASTLM_ISA_AVX2)
namespace avx2 { const KernelTable& kernel_table(); }
#endif
#if defined(FASTLM_HAVE_AVX512) || defined(FASTLM_ISA_AVX512)
namespace avx512 { const KernelTable& kernel_table(); }
#endif

// scalar references: the test oracles. plain loops, double accumulation where it matters; the
// table (kernel_table) has no packed weights (pack_weight / packed_row do nothing).
namespace ref {
FASTLM_KERNEL_OPS(FASTLM_DECLARE_OP)
// matmul on plain arguments (the tests' oracle for every weight layout)
void matmul(const float* x, int64_t M, int64_t K, const void* w, DType wtype, int64_t N,
            const float* bias, float* y);
const KernelTable& kernel_table();
}  // namespace ref

}  // namespace fastlm
