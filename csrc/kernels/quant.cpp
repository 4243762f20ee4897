// int8: per-row symmetric quantization and the int8 GEMM / GEMV.
//
// quantize: s = max|x| / 127, q = clamp(nearbyint(x * (1 / s)), -127, 127) (all zero if s = 0).
// int8_matmul: y[m, n] = sum_k qx[m, k] qw[n, k] * sx[m] * sw[n] (+ b[n]), int32 accumulation;
// x is quantized per row on the fly (torch's dynamic int8 Linear does the same per tensor).
//
// the int32 dot products use vdot4 (simd.h): vpdpbusd with AVX512-VNNI, vpmaddubsw + vpmaddwd
// on AVX2, plain C++ otherwise. GEMM: W is repacked per call into panels of NRI output columns,
// 4 consecutive k per int32 lane, and an MRI x NRI micro-kernel broadcasts 4 bytes of x.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/isa.h"
#include "kernels/tiling.h"
#include "base/threadpool.h"

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int NVI = 2;           // int32 vectors per panel row
constexpr int NRI = NVI * kW;    // output columns per panel
#if defined(FASTLM_ISA_AVX512)
constexpr int MRI = 8;   // 8x2 accumulators + 2 B + |a| / signed-b temporaries, of 32 zmm
#elif defined(FASTLM_ISA_AVX2)
constexpr int MRI = 4;   // 4x2 accumulators + 2 B + a, |a|, 2 temporaries + ones = 15 of 16 ymm
#else
constexpr int MRI = 4;
#endif
constexpr int64_t kGemmMinRows = 4;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

void quantize_row(const float* x, int64_t n, int8_t* q, float* scale) {
  VF amax = vzero();
  for (int64_t i = 0; i < n; i += kW) amax = vmax(amax, vabs(vload_n(x + i, int(std::min<int64_t>(kW, n - i)))));
  const float s = vhmax(amax) / 127.0f;
  const float inv = s > 0.0f ? 1.0f / s : 0.0f;
  *scale = s;
  VF iv = vset1(inv), lo = vset1(-127.0f), hi = vset1(127.0f);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore_i8(q + i, vcvt_round(vmin(vmax(vmul(vload(x + i), iv), lo), hi)));
  for (; i < n; ++i) {
    float v = std::nearbyint(x[i] * inv);
    q[i] = int8_t(std::min(127.0f, std::max(-127.0f, v)));
  }
}

template <int M>
void micro_kernel(int64_t k4, const int8_t* a, int64_t lda, const int8_t* b, const float* sa,
                  const float* sb, const float* bias, float* c, int64_t ldc, int n_valid) {
  VI acc[M][NVI];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NVI; ++v) acc[i][v] = vizero();
  for (int64_t g = 0; g < k4; ++g) {
    VI bv[NVI];
#pragma GCC unroll 4
    for (int v = 0; v < NVI; ++v) bv[v] = viload(b + (g * NRI + v * kW) * 4);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      VI ai = vibcast4(a + i * lda + g * 4);
#pragma GCC unroll 4
      for (int v = 0; v < NVI; ++v) acc[i][v] = vdot4(acc[i][v], ai, bv[v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    VF sai = vset1(sa[i]);
#pragma GCC unroll 4
    for (int v = 0; v < NVI; ++v) {
      int n = std::min(kW, n_valid - v * kW);
      if (n <= 0) break;
      VF r = vmul(vmul(vcvt(acc[i][v]), sai), vload_n(sb + v * kW, n));
      if (bias) r = vadd(r, vload_n(bias + v * kW, n));
      float* cp = c + i * ldc + v * kW;
      if (n == kW) vstore(cp, r); else vstore_part(cp, r, n);
    }
  }
}

template <int M>
FASTLM_INLINE void call_kernel(int m, int64_t k4, const int8_t* a, int64_t lda, const int8_t* b,
                               const float* sa, const float* sb, const float* bias, float* c,
                               int64_t ldc, int n_valid) {
  if constexpr (M > 0) {
    if (m == M) return micro_kernel<M>(k4, a, lda, b, sa, sb, bias, c, ldc, n_valid);
    return call_kernel<M - 1>(m, k4, a, lda, b, sa, sb, bias, c, ldc, n_valid);
  }
}

// panels of NRI columns: for each group of 4 k, NRI x 4 bytes; zero past N and past K
void pack_int8(const int8_t* w, int64_t N, int64_t K, int64_t K4p, int8_t* packed) {
  const int64_t n_panels = (N + NRI - 1) / NRI;
  parallel_range(n_panels, 4, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int8_t* dst = packed + p * K4p * NRI;
      std::memset(dst, 0, size_t(K4p * NRI));
      for (int j = 0; j < NRI; ++j) {
        const int64_t n = p * NRI + j;
        if (n >= N) break;
        const int8_t* src = w + n * K;
        for (int64_t k = 0; k < K; ++k) dst[(k / 4) * NRI * 4 + j * 4 + (k & 3)] = src[k];
      }
    }
  });
}

// M < kGemmMinRows: dot products straight off the row-major W, four rows at a time
void gemv_int8(const int8_t* qx, const float* sx, int64_t M, int64_t K, const int8_t* w,
               const float* sw, int64_t N, const float* bias, float* y) {
  constexpr int kB = 4 * kW;  // bytes per vector
  const int64_t k_full = K / kB * kB;
  auto dot_tail = [&](const int8_t* a, const int8_t* b) {
    int32_t s = 0;
    for (int64_t k = k_full; k < K; ++k) s += int32_t(a[k]) * b[k];
    return s;
  };
  parallel_range(N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t r = 0; r < M; ++r) {
      const int8_t* xr = qx + r * K;
      float* yr = y + r * N;
      int64_t n = n0;
      for (; n + 4 <= n1; n += 4) {
        const int8_t* w0 = w + n * K;
        VI a0 = vizero(), a1 = vizero(), a2 = vizero(), a3 = vizero();
        for (int64_t k = 0; k < k_full; k += kB) {
          VI xv = viload(xr + k);
          if (k % 64 == 0) {  // the next four rows, while these are summed (see matmul.cpp)
            __builtin_prefetch(w0 + 4 * K + k);
            __builtin_prefetch(w0 + 5 * K + k);
            __builtin_prefetch(w0 + 6 * K + k);
            __builtin_prefetch(w0 + 7 * K + k);
          }
          a0 = vdot4(a0, xv, viload(w0 + k));
          a1 = vdot4(a1, xv, viload(w0 + K + k));
          a2 = vdot4(a2, xv, viload(w0 + 2 * K + k));
          a3 = vdot4(a3, xv, viload(w0 + 3 * K + k));
        }
        int32_t d[4] = {visum(a0), visum(a1), visum(a2), visum(a3)};
        for (int j = 0; j < 4; ++j) {
          d[j] += dot_tail(xr, w0 + j * K);
          yr[n + j] = float(d[j]) * sx[r] * sw[n + j] + (bias ? bias[n + j] : 0.0f);
        }
      }
      for (; n < n1; ++n) {
        const int8_t* wn = w + n * K;
        VI a0 = vizero();
        for (int64_t k = 0; k < k_full; k += kB) a0 = vdot4(a0, viload(xr + k), viload(wn + k));
        int32_t d = visum(a0) + dot_tail(xr, wn);
        yr[n] = float(d) * sx[r] * sw[n] + (bias ? bias[n] : 0.0f);
      }
    }
  });
}

struct Workspace {  // carved out of the caller's buffer, each piece 64-byte aligned
  int8_t* qx;       // (M, K4p) quantized x, zero-padded along K
  float* sx;        // (M,)
  int8_t* packed;   // panels
};

Workspace carve(void* base, int64_t M, int64_t N, int64_t K4p) {
  char* p = static_cast<char*>(base);
  Workspace w;
  w.qx = reinterpret_cast<int8_t*>(p);
  p += round_up(M * K4p, 64);
  w.sx = reinterpret_cast<float*>(p);
  p += round_up(M * 4, 64);
  w.packed = reinterpret_cast<int8_t*>(p);
  return w;
}

}  // namespace

void quantize_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  parallel_range(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) quantize_row(x + r * cols, cols, q + r * cols, scale + r);
  });
}

size_t int8_matmul_workspace(int64_t M, int64_t N, int64_t K) {
  const int64_t K4p = round_up(K, 4);
  size_t bytes = size_t(round_up(M * K4p, 64) + round_up(M * 4, 64));
  if (M >= kGemmMinRows) bytes += size_t(round_up(N, NRI) * K4p);
  return bytes;
}

void int8_matmul(const Int8MatmulArgs& a) {
  const int64_t M = a.M, K = a.K, N = a.N;
  if (M < kGemmMinRows) {
    Workspace ws = carve(a.workspace, M, N, K);
    for (int64_t r = 0; r < M; ++r) quantize_row(a.x + r * K, K, ws.qx + r * K, ws.sx + r);
    return gemv_int8(ws.qx, ws.sx, M, K, a.qw, a.wscale, N, a.bias, a.y);
  }
  const int64_t K4p = round_up(K, 4);
  Workspace ws = carve(a.workspace, M, N, K4p);
  parallel_range(M, std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int8_t* qr = ws.qx + r * K4p;
      quantize_row(a.x + r * K, K, qr, ws.sx + r);
      for (int64_t k = K; k < K4p; ++k) qr[k] = 0;
    }
  });
  pack_int8(a.qw, N, K, K4p, ws.packed);

  const int64_t k4 = K4p / 4;
  const int64_t n_panels = (N + NRI - 1) / NRI;
  const GemmTasks tasks(M, n_panels, MRI * 16, num_threads());
  parallel_for(tasks.count(), [&](int64_t task) {
    int64_t m0, m1, p0, p1;
    tasks.range(task, M, m0, m1, p0, p1);
    for (int64_t p = p0; p < p1; ++p) {
      const int8_t* panel = ws.packed + p * K4p * NRI;
      const int n_valid = int(std::min<int64_t>(NRI, N - p * NRI));
      const float* bias_p = a.bias ? a.bias + p * NRI : nullptr;
      for (int64_t i = m0; i < m1; i += MRI) {
        const int m = int(std::min<int64_t>(MRI, m1 - i));
        call_kernel<MRI>(m, k4, ws.qx + i * K4p, K4p, panel, ws.sx + i, a.wscale + p * NRI, bias_p,
                         a.y + i * N + p * NRI, N, n_valid);
      }
    }
  });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
