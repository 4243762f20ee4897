// y = x @ W^T (+ b)
// x: (M, K) row-major, W: (N, K) row-major ("linear" layout), y: (M, N); W float32 or bfloat16.
//
// two paths:
//  - GEMV (M < kGemmMinRows on an unpacked W): each output is a dot product of x with one row of
//    W, four rows at a time; W streams from memory once (decode is bandwidth-bound).
//  - GEMM: W in panels of NR output columns, k-major (packed at load, or per call into the
//    workspace); an MR x NR register-blocked micro-kernel broadcasts x[i, k] and FMAs it into NR
//    columns. packed panels also serve M = 1 (the decode step of a runtime holding packed weights).
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/isa.h"
#include "kernels/tiling.h"
#include "base/threadpool.h"

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int NV = 2;         // vectors per panel row
constexpr int NR = NV * kW;   // panel width: 16 floats (avx2, scalar) or 32 (avx512)
// two micro-kernels. up to kFewRows rows (decode, small batches): two sets of accumulators, for
// even and odd k, added at the end, which gives four or more independent FMA chains even for one
// row, and the same summation order for any row count up to kFewRows, so a sequence decodes to the
// same bits alone or in a batch. more rows (prefill): one set, taller (more reuse of each B load).
constexpr int64_t kFewRows = 16;
#if defined(FASTLM_ISA_AVX512)
constexpr int MR_FEW = 7;   // 2 x 7x2 zmm accumulators + 2 B loads + 1 A broadcast = 31 of 32 registers
constexpr int MR = 14;      // 14x2 zmm accumulators + 2 B loads + 1 A broadcast = 31 of 32 registers
#elif defined(FASTLM_ISA_AVX2)
constexpr int MR_FEW = 3;   // 2 x 3x2 ymm accumulators + 2 B loads + 1 A broadcast = 15 of 16 registers
constexpr int MR = 6;       // 6x2 ymm accumulators + 2 B loads + 1 A broadcast = 15 of 16 registers
#else
constexpr int MR_FEW = 2;
constexpr int MR = 4;
#endif
constexpr int64_t kGemmMinRows = 4;    // below this, packing W per call costs more than it saves
constexpr int kPrefetchBytes = 1024;   // bf16 decode prefetch distance: 65-77 tok/s with, 58-60 without
constexpr int64_t kMaxKC = 1024;     // K block: a (KC, NR) panel stays in L1/L2 across MR rows

template <typename WT>
FASTLM_INLINE VF load_w(const WT* p) { return vload(p); }

// C[0:m, 0:n_valid] (+)= A[0:m, 0:kc] @ B-panel[0:kc, 0:NR]; bias added when not accumulating
template <int M, typename WT>
FASTLM_INLINE void kernel_step(const float* a, int64_t lda, const WT* b, int64_t k, VF (&acc)[M][NV]) {
  VF bv[NV];
  if constexpr (std::is_same<WT, uint16_t>::value) {
    static_assert(NV == 2, "bf16 panels hold one pair block per k");
    vload_bf16x2(b + k * NR, bv[0], bv[1]);
  } else {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = load_w(b + k * NR + v * kW);
      FASTLM_IN_REGISTER(bv[v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    VF ai = vset1(a[i * lda + k]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vfma(ai, bv[v], acc[i][v]);
  }
}

// C[0:m, 0:n_valid] (+)= A[0:m, 0:kc] @ B-panel[0:kc, 0:NR]; bias added when not accumulating.
// KU = 2: even and odd k in separate accumulators (see kFewRows)
template <int M, int KU, typename WT>
void micro_kernel(int64_t kc, const float* a, int64_t lda, const WT* b, float* c, int64_t ldc,
                  int n_valid, bool accumulate, const float* bias) {
  VF even[M][NV], odd[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) even[i][v] = odd[i][v] = vzero();
  int64_t k = 0;
  if constexpr (KU == 2) {
    for (; k + 2 <= kc; k += 2) {
      // bf16 decode streams the panels from memory at half the bytes per FMA of fp32, and the
      // hardware prefetcher falls behind: ask for them ahead (fp32 measured no better with it)
      if (M <= 2 && std::is_same<WT, uint16_t>::value) {
        __builtin_prefetch(reinterpret_cast<const char*>(b + k * NR) + kPrefetchBytes);
        __builtin_prefetch(reinterpret_cast<const char*>(b + k * NR) + kPrefetchBytes + 64);
      }
      kernel_step<M>(a, lda, b, k, even);
      kernel_step<M>(a, lda, b, k + 1, odd);
    }
  }
  for (; k < kc; ++k) kernel_step<M>(a, lda, b, k, even);
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      int n = std::min(kW, n_valid - v * kW);
      if (n <= 0) break;
      float* cp = c + i * ldc + v * kW;
      VF r = KU == 2 ? vadd(even[i][v], odd[i][v]) : even[i][v];
      if (accumulate) {
        r = vadd(r, vload_n(cp, n));
      } else if (bias) {
        r = vadd(r, vload_n(bias + v * kW, n));
      }
      if (n == kW) vstore(cp, r); else vstore_part(cp, r, n);
    }
  }
}

template <typename WT, int KU, int M>
FASTLM_INLINE void call_kernel(int m, int64_t kc, const float* a, int64_t lda, const WT* b,
                               float* c, int64_t ldc, int n_valid, bool acc, const float* bias) {
  if constexpr (M > 0) {
    if (m == M) return micro_kernel<M, KU, WT>(kc, a, lda, b, c, ldc, n_valid, acc, bias);
    return call_kernel<WT, KU, M - 1>(m, kc, a, lda, b, c, ldc, n_valid, acc, bias);
  }
}

template <typename WT, int KU, int MRK>
void gemm_packed_with(const float* x, int64_t M, int64_t K, const WT* packed, int64_t N,
                      const float* bias, float* y) {
  const int64_t n_panels = (N + NR - 1) / NR;
  const int64_t kc_max = K <= kMaxKC ? K : 512;
  // about 100 rows of x (x K floats) stay in L2 while the panels of a task stream past them
  const GemmTasks tasks(M, n_panels, MRK * (96 / MRK), num_threads());
  parallel_for(tasks.count(), [&](int64_t task) {
    int64_t m0, m1, p0, p1;
    tasks.range(task, M, m0, m1, p0, p1);
    for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
      const int64_t kc = std::min(kc_max, K - k0);
      const bool accumulate = k0 > 0;
      for (int64_t p = p0; p < p1; ++p) {
        const WT* panel = packed + p * K * NR + k0 * NR;
        const int n_valid = int(std::min<int64_t>(NR, N - p * NR));
        const float* bias_p = bias ? bias + p * NR : nullptr;
        for (int64_t i = m0; i < m1; i += MRK) {
          const int m = int(std::min<int64_t>(MRK, m1 - i));
          call_kernel<WT, KU, MRK>(m, kc, x + i * K + k0, K, panel, y + i * N + p * NR, N, n_valid,
                                   accumulate, bias_p);
        }
      }
    }
  });
}

template <typename WT>
void gemm_packed(const float* x, int64_t M, int64_t K, const WT* packed, int64_t N,
                 const float* bias, float* y) {
  if (M <= kFewRows) return gemm_packed_with<WT, 2, MR_FEW>(x, M, K, packed, N, bias, y);
  gemm_packed_with<WT, 1, MR>(x, M, K, packed, N, bias, y);
}

// bf16 rows: blocks of 2 kW weights widen with one load + two unpacks (vload_bf16x2), which
// hands them out in pair order; x is permuted the same way once, so the dot products line up
void gemv_rows_bf16(const float* x, int64_t M, int64_t K, const uint16_t* w, int64_t N,
                    const float* bias, float* y) {
  constexpr int B = 2 * kW;
  const int64_t k_full = K / B * B;
  thread_local std::vector<float> perm_buf;  // the caller's; workers use the pointer below
  perm_buf.resize(size_t(M * k_full));
  float* const xp = perm_buf.data();
  for (int64_t r = 0; r < M; ++r)
    for (int64_t k = 0; k < k_full; k += B)
      for (int e = 0; e < B; ++e) xp[r * k_full + k + e] = x[r * K + k + bf16_pair_pos(e)];
  parallel_range(N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t r = 0; r < M; ++r) {
      const float* xr = x + r * K;
      const float* xpr = xp + r * k_full;
      float* yr = y + r * N;
      int64_t n = n0;
      for (; n + 4 <= n1; n += 4) {
        const uint16_t* w0 = w + n * K;
        VF a[4] = {vzero(), vzero(), vzero(), vzero()}, c[4] = {vzero(), vzero(), vzero(), vzero()};
        for (int64_t k = 0; k < k_full; k += B) {
          VF xl = vload(xpr + k), xh = vload(xpr + k + kW);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            // rows are short streams the hardware prefetcher loses between blocks: fetch the
            // next block of four rows while this one is summed
            __builtin_prefetch(w0 + (4 + j) * K + k);
            VF lo, hi;
            vload_bf16x2(w0 + j * K + k, lo, hi);
            a[j] = vfma(lo, xl, a[j]);
            c[j] = vfma(hi, xh, c[j]);
          }
        }
        for (int64_t k = k_full; k < K; k += kW) {
          int m = int(std::min<int64_t>(kW, K - k));
          VF xv = vload_n(xr + k, m);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) a[j] = vfma(vload_n(w0 + j * K + k, m), xv, a[j]);
        }
        for (int j = 0; j < 4; ++j) yr[n + j] = vsum(vadd(a[j], c[j])) + (bias ? bias[n + j] : 0.0f);
      }
      for (; n < n1; ++n) {
        const uint16_t* wn = w + n * K;
        VF a0 = vzero(), c0 = vzero();
        for (int64_t k = 0; k < k_full; k += B) {
          VF lo, hi;
          vload_bf16x2(wn + k, lo, hi);
          a0 = vfma(lo, vload(xpr + k), a0);
          c0 = vfma(hi, vload(xpr + k + kW), c0);
        }
        for (int64_t k = k_full; k < K; k += kW) {
          int m = int(std::min<int64_t>(kW, K - k));
          a0 = vfma(vload_n(wn + k, m), vload_n(xr + k, m), a0);
        }
        yr[n] = vsum(vadd(a0, c0)) + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

// y[r, n] = dot(x[r], W[n]) for r < M (M small): W is read once per row of x
template <typename WT>
void gemv_rows(const float* x, int64_t M, int64_t K, const WT* w, int64_t N, const float* bias,
               float* y) {
  const int64_t k_full = K / kW * kW;
  const int tail = int(K - k_full);
  parallel_range(N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t r = 0; r < M; ++r) {
      const float* xr = x + r * K;
      float* yr = y + r * N;
      int64_t n = n0;
      for (; n + 4 <= n1; n += 4) {
        const WT* w0 = w + n * K;
        VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        for (int64_t k = 0; k < k_full; k += kW) {
          VF xv = vload(xr + k);
          // rows are short streams the hardware prefetcher loses between blocks: fetch the next
          // block of four rows while this one is summed (one line per row every 64 bytes)
          if ((k * sizeof(WT)) % 64 == 0) {
            __builtin_prefetch(w0 + 4 * K + k);
            __builtin_prefetch(w0 + 5 * K + k);
            __builtin_prefetch(w0 + 6 * K + k);
            __builtin_prefetch(w0 + 7 * K + k);
          }
          a0 = vfma(load_w(w0 + k), xv, a0);
          a1 = vfma(load_w(w0 + K + k), xv, a1);
          a2 = vfma(load_w(w0 + 2 * K + k), xv, a2);
          a3 = vfma(load_w(w0 + 3 * K + k), xv, a3);
        }
        if (tail) {
          VF xv = vload_part(xr + k_full, tail);
          a0 = vfma(vload_part(w0 + k_full, tail), xv, a0);
          a1 = vfma(vload_part(w0 + K + k_full, tail), xv, a1);
          a2 = vfma(vload_part(w0 + 2 * K + k_full, tail), xv, a2);
          a3 = vfma(vload_part(w0 + 3 * K + k_full, tail), xv, a3);
        }
        yr[n] = vsum(a0) + (bias ? bias[n] : 0.0f);
        yr[n + 1] = vsum(a1) + (bias ? bias[n + 1] : 0.0f);
        yr[n + 2] = vsum(a2) + (bias ? bias[n + 2] : 0.0f);
        yr[n + 3] = vsum(a3) + (bias ? bias[n + 3] : 0.0f);
      }
      for (; n < n1; ++n) {
        const WT* wn = w + n * K;
        VF a0 = vzero();
        for (int64_t k = 0; k < k_full; k += kW) a0 = vfma(load_w(wn + k), vload(xr + k), a0);
        if (tail) a0 = vfma(vload_part(wn + k_full, tail), vload_part(xr + k_full, tail), a0);
        yr[n] = vsum(a0) + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

template <typename WT>
void pack_panels(const WT* w, int64_t N, int64_t K, WT* packed) {
  const int64_t n_panels = (N + NR - 1) / NR;
  parallel_range(n_panels, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      WT* dst = packed + p * K * NR;
      for (int j = 0; j < NR; ++j) {
        const int64_t n = p * NR + j;
        // bf16 columns go where vload_bf16x2 expects them
        const int pos = std::is_same<WT, uint16_t>::value ? bf16_pair_pos(j) : j;
        if (n < N) {
          const WT* src = w + n * K;
          for (int64_t k = 0; k < K; ++k) dst[k * NR + pos] = src[k];
        } else {
          for (int64_t k = 0; k < K; ++k) dst[k * NR + pos] = WT(0);
        }
      }
    }
  });
}

template <typename WT>
void matmul_typed(const MatmulArgs& a) {
  const WT* w = static_cast<const WT*>(a.w);
  if (a.packed) return gemm_packed(a.x, a.M, a.K, w, a.N, a.bias, a.y);
  if (a.M < kGemmMinRows) {
    if constexpr (std::is_same<WT, uint16_t>::value) return gemv_rows_bf16(a.x, a.M, a.K, w, a.N, a.bias, a.y);
    return gemv_rows(a.x, a.M, a.K, w, a.N, a.bias, a.y);
  }
  WT* packed = static_cast<WT*>(a.workspace);
  pack_panels(w, a.N, a.K, packed);
  gemm_packed(a.x, a.M, a.K, packed, a.N, a.bias, a.y);
}

}  // namespace

int matmul_pack_nr() { return NR; }
int gemm_panel_width() { return NR; }

void gemm_fill_panels(const float* x, int64_t M, int64_t K, int64_t N,
                      void (*fill)(const void* ctx, int64_t n0, float* panel), const void* ctx,
                      const float* bias, float* y, int64_t ldy) {
  const int64_t n_panels = (N + NR - 1) / NR;
  const int64_t kc_max = K <= kMaxKC ? K : 512;
  // each panel is filled once and meets every row of x (which streams from L3): filling costs
  // about as much as a few rows of FMAs, so it must not repeat per block of rows
  parallel_range(n_panels, 1, [&](int64_t p0, int64_t p1) {
    thread_local std::vector<float> panel_buf;
    panel_buf.resize(size_t(K * NR));
    float* panel = panel_buf.data();
    for (int64_t p = p0; p < p1; ++p) {
      fill(ctx, p * NR, panel);
      const int n_valid = int(std::min<int64_t>(NR, N - p * NR));
      const float* bias_p = bias ? bias + p * NR : nullptr;
      for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
        const int64_t kc = std::min(kc_max, K - k0);
        for (int64_t i = 0; i < M; i += MR) {
          const int m = int(std::min<int64_t>(MR, M - i));
          call_kernel<float, 1, MR>(m, kc, x + i * K + k0, K, panel + k0 * NR, y + i * ldy + p * NR, ldy,
                                    n_valid, k0 > 0, bias_p);
        }
      }
    }
  });
}

size_t matmul_workspace(int64_t M, int64_t N, int64_t K, bool packed) {
  if (packed || M < kGemmMinRows) return 0;
  return size_t(packed_weight_elems(N, K, NR)) * sizeof(float);
}

void pack_weight(const void* w, DType wtype, int64_t N, int64_t K, void* packed) {
  if (wtype == DType::kF32) {
    pack_panels(static_cast<const float*>(w), N, K, static_cast<float*>(packed));
  } else {
    pack_panels(static_cast<const uint16_t*>(w), N, K, static_cast<uint16_t*>(packed));
  }
}

void packed_row(const void* packed, DType wtype, int64_t N, int64_t K, int64_t n, float* out) {
  (void)N;
  const int64_t p = n / NR;
  const int j = int(n % NR);
  if (wtype == DType::kF32) {
    const float* src = static_cast<const float*>(packed) + p * K * NR + j;
    for (int64_t k = 0; k < K; ++k) out[k] = src[k * NR];
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(packed) + p * K * NR + bf16_pair_pos(j);
    for (int64_t k = 0; k < K; ++k) {
      uint32_t u = uint32_t(src[k * NR]) << 16;
      std::memcpy(out + k, &u, 4);
    }
  }
}

void matmul(const MatmulArgs& a) {
  if (a.wtype == DType::kF32) matmul_typed<float>(a); else matmul_typed<uint16_t>(a);
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
