// the functions each ISA copy of the kernels defines, in namespace fastlm::<isa>: the ops of
// FASTLM_KERNEL_OPS (kernels.h), which table.cpp gathers into that ISA's KernelTable, and helpers
// the kernel files share. included only by the kernel files.
#pragma once

#include <algorithm>

#include "base/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/simd.h"

namespace fastlm {
namespace FASTLM_ISA_NS {

FASTLM_KERNEL_OPS(FASTLM_DECLARE_OP)
int matmul_pack_nr();
// the GGUF block types (qmatmul_ggml.cpp): a row dequantized as the `gguf` package does, and
// q_matmul for up to 16 rows of x
void ggml_dequantize_row(const QWeight& w, int64_t n, float* out);
void ggml_matvec(const QMatmulArgs& a);

// the rows of a q_matmul's parts (stacked along N) spread over the pool: rows(w, n0, n1, y) for
// rows n0 .. n1 of part w, whose outputs start at y
template <class F>
void over_parts(const QMatmulArgs& a, F&& rows) {
  int64_t N = 0;
  for (int p = 0; p < a.n_parts; ++p) N += a.parts[p].N;
  parallel_range(N, 16, [&](int64_t r0, int64_t r1) {
    int64_t off = 0;
    for (int p = 0; p < a.n_parts; ++p) {
      const QWeight& w = a.parts[p];
      const int64_t s = std::max(r0, off), e = std::min(r1, off + w.N);
      if (s < e) rows(w, s - off, e - off, a.y + off);
      off += w.N;
    }
  });
}
// C = x @ W^T for a W handed out panel by panel: fill(ctx, n0, panel) writes rows n0 .. n0 + NR - 1
// of W (zeros past N) as a (K, NR) panel; y: (M, ldy); bias (N,) or null
int gemm_panel_width();
void gemm_fill_panels(const float* x, int64_t M, int64_t K, int64_t N,
                      void (*fill)(const void* ctx, int64_t n0, float* panel), const void* ctx,
                      const float* bias, float* y, int64_t ldy);

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
