// the functions each ISA copy of the kernels defines, in namespace fastlm::<isa>;
// table.cpp gathers them into that ISA's KernelTable. included only by the kernel files.
#pragma once

#include "kernels/kernels.h"
#include "kernels/simd.h"

namespace fastlm {
namespace FASTLM_ISA_NS {

int matmul_pack_nr();
void pack_weight(const void* w, WeightType wtype, int64_t N, int64_t K, void* packed);
void packed_row(const void* packed, WeightType wtype, int64_t N, int64_t K, int64_t n, float* out);
size_t matmul_workspace(int64_t M, int64_t N, int64_t K, bool packed);
void matmul(const MatmulArgs& a);
void attention(const AttentionArgs& a);
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps);
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows,
                int64_t cols, float eps);
void quantize_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale);
size_t int8_matmul_workspace(int64_t M, int64_t N, int64_t K);
void int8_matmul(const Int8MatmulArgs& a);
void rope(float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D,
          int64_t rot_dim,
          const float* inv_freq, bool interleaved);
void gelu_tanh(const float* x, float* y, int64_t n);
void silu_mul(const float* gate, const float* up, float* y, int64_t n);
void softmax(const float* x, float* y, int64_t rows, int64_t cols);
void add(const float* a, const float* b, float* y, int64_t n);
void q_quantize(const float* w, int64_t N, int64_t K, QType type, int64_t G, uint8_t* out);
void q_dequantize_row(const QWeight& w, int64_t n, float* out);
void q_matmul(const QMatmulArgs& a);
// C = x @ W^T for a W handed out panel by panel: fill(ctx, n0, panel) writes rows n0 .. n0 + NR - 1
// of W (zeros past N) as a (K, NR) panel; y: (M, ldy); bias (N,) or null
int gemm_panel_width();
void gemm_fill_panels(const float* x, int64_t M, int64_t K, int64_t N,
                      void (*fill)(const void* ctx, int64_t n0, float* panel), const void* ctx,
                      const float* bias, float* y, int64_t ldy);

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
