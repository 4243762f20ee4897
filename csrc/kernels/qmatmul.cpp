// quantized linear layers: y = x @ W^T over the q8 / q4 weight records of kernels.h (and their
// quantizer, qformat.h, spread over threads).
//
// decode (few rows of x): each weight row streams once and is dotted in 32-element blocks:
//   q8: int8 weights (sign-extended to int16) x int16 activations, vpmaddwd -> int32 per block;
//   q4: nibbles unpacked to bytes x int8 activations, vpmaddubsw + vpmaddwd -> int32 per block.
// eight blocks' int32 vectors are reduced together (hadd tree) into one vector of 8 block sums,
// converted once and multiplied by the 8 block scales: ~1.4 instructions per block for the float
// side instead of ~5 block by block. q4's minimums add m * (sum of the block's activations), one
// FMA per 8 blocks. prefill (many rows) dequantizes NR-row panels into the float GEMM.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/half.h"
#include "kernels/isa.h"
#include "kernels/qdot.h"
#include "kernels/qformat.h"
#include "base/threadpool.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int64_t kBlock = 32;          // the dot-product block, and the q4 nibble layout's unit
// from here a panel dequantized once feeds enough rows; decode batches (up to 16 rows) stay on the
// integer path, so a sequence decodes to the same bits alone or in a batch
constexpr int64_t kDequantMinRows = 17;

// the activations of one call, quantized as the weights' kind wants
struct QuantX {
  int64_t kp = 0;
  std::vector<int16_t> x16;     // q8: (M, kp), scale per row
  std::vector<int8_t> x8;       // q4: (M, kp), scale per 32-block
  std::vector<float> row_scale; // q8: (M,)
  std::vector<float> blk_scale; // q4: (M, kp / 32)
  std::vector<float> blk_sum;   // q4: (M, kp / 32) = scale * sum of the block's int8 values
};

void quantize_x16(const float* x, int64_t M, int64_t K, int64_t kp, QuantX& q) {
  q.x16.assign(size_t(M * kp), 0);
  q.row_scale.resize(size_t(M));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    const float s = amax / 32767.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
    q.row_scale[size_t(m)] = s;
    int16_t* out = q.x16.data() + m * kp;
    for (int64_t k = 0; k < K; ++k) out[k] = int16_t(std::nearbyint(std::min(32767.0f, std::max(-32767.0f, xr[k] * inv))));
  }
}

void quantize_x8(const float* x, int64_t M, int64_t K, int64_t kp, QuantX& q) {
  q.x8.resize(size_t(M * kp));
  q.blk_scale.resize(size_t(M * kp / kBlock));
  q.blk_sum.resize(size_t(M * kp / kBlock));
  quantize_blocks32(x, M, K, kp, q.x8.data(), q.blk_scale.data(), q.blk_sum.data());
}

// the scale of each 32-block of a record's group scales: block b uses scale b / (G / 32)
inline float block_scale(const uint8_t* scales, int64_t b, int64_t gpb) {
  uint16_t h;
  std::memcpy(&h, scales + 2 * (b / gpb), 2);
  return half_to_float(h);
}

#if defined(__AVX2__)
FASTLM_INLINE __m256i block_q8(const int8_t* w, const int16_t* x) {
  const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)));
  const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16));
  return _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
}

// two 32-blocks of a q4 row (32 bytes of nibbles) against their 64 int8 activations
FASTLM_INLINE void pair_q4(const uint8_t* w, const int8_t* x, __m256i& lo, __m256i& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i mask = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const __m256i a = _mm256_and_si256(v, mask), b = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
  lo = _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))), ones);
  hi = _mm256_madd_epi16(_mm256_maddubs_epi16(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32))), ones);
}

// fp16 group scales of the 8 blocks starting at block b0 (a multiple of 8), one per block
template <int GPB>
FASTLM_INLINE __m256 scales8(const uint8_t* scales, int64_t b0) {
  const uint8_t* p = scales + 2 * (b0 / GPB);
  if constexpr (GPB == 1) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  if constexpr (GPB == 2) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_cvtsi64_si128(v)), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  }
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_cvtsi32_si128(v)), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

// sum_b d_b * <w_b, x_b> over two q8 records at once, x loaded once for both (without the row's
// activation scale)
template <int GPB>
void dot_q8x2(const uint8_t* rec0, const uint8_t* rec1, const int16_t* x, int64_t kp, float& y0, float& y1) {
  const int8_t* q0 = reinterpret_cast<const int8_t*>(rec0);
  const int8_t* q1 = reinterpret_cast<const int8_t*>(rec1);
  const int64_t nb = kp / kBlock, full = nb / 8 * 8;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < full; b0 += 8) {
    __m256i h0[2], h1[2];
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m256i a[4], c[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const int64_t k = (b0 + 4 * half + i) * kBlock;
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 16));
        a[i] = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + k))), x0),
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + k + 16))), x1));
        c[i] = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + k))), x0),
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + k + 16))), x1));
      }
      h0[half] = hadd4(a[0], a[1], a[2], a[3]);
      h1[half] = hadd4(c[0], c[1], c[2], c[3]);
    }
    const __m256i s0 = combine8(h0[0], h0[1]), s1 = combine8(h1[0], h1[1]);
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), scales8<GPB>(rec0 + kp, b0), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), scales8<GPB>(rec1 + kp, b0), acc1);
  }
  float t0 = 0.0f, t1 = 0.0f;  // (explicit fmas: the same bits in dot_q8x2x2, however the compiler fuses)
  for (int64_t b = full; b < nb; ++b) {
    t0 = std::fma(float(hsum_i32(block_q8(q0 + b * kBlock, x + b * kBlock))), block_scale(rec0 + kp, b, GPB), t0);
    t1 = std::fma(float(hsum_i32(block_q8(q1 + b * kBlock, x + b * kBlock))), block_scale(rec1 + kp, b, GPB), t1);
  }
  y0 = hsum(acc0) + t0;
  y1 = hsum(acc1) + t1;
}

#if defined(FASTLM_ISA_AVX512) && !defined(FASTLM_EMULATE_ISA)
#define FASTLM_Q8_TWO_ROWS 1
// dot_q8x2 for two rows of x at once (batched decode): each weight block is widened to int16 once
// for both rows, and vpdpwssd (VNNI) folds each multiply-add pair into its block sum. the int32
// block sums are exact, and the float side is dot_q8x2's op for op (its tails as explicit fmas), so
// every (weight row, x row) gets the same bits as alone
template <int GPB>
void dot_q8x2x2(const uint8_t* rec0, const uint8_t* rec1, const int16_t* xa, const int16_t* xb, int64_t kp,
                float* ya, float* yb) {
  const int8_t* q0 = reinterpret_cast<const int8_t*>(rec0);
  const int8_t* q1 = reinterpret_cast<const int8_t*>(rec1);
  const int64_t nb = kp / kBlock, full = nb / 8 * 8;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i z = _mm256_setzero_si256();
  for (int64_t b0 = 0; b0 < full; b0 += 8) {
    __m256i h[4][2];  // (rec0 xa, rec1 xa, rec0 xb, rec1 xb) x half
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      __m256i s[4][4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const int64_t k = (b0 + 4 * half + i) * kBlock;
        const __m256i w0l = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + k)));
        const __m256i w0h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q0 + k + 16)));
        const __m256i w1l = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + k)));
        const __m256i w1h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q1 + k + 16)));
        const __m256i al = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa + k));
        const __m256i ah = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa + k + 16));
        const __m256i bl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + k));
        const __m256i bh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + k + 16));
        s[0][i] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(z, w0l, al), w0h, ah);
        s[1][i] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(z, w1l, al), w1h, ah);
        s[2][i] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(z, w0l, bl), w0h, bh);
        s[3][i] = _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(z, w1l, bl), w1h, bh);
      }
      for (int c = 0; c < 4; ++c) h[c][half] = hadd4(s[c][0], s[c][1], s[c][2], s[c][3]);
    }
    const __m256 d0 = scales8<GPB>(rec0 + kp, b0), d1 = scales8<GPB>(rec1 + kp, b0);
    acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(combine8(h[0][0], h[0][1])), d0, acc[0]);
    acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(combine8(h[1][0], h[1][1])), d1, acc[1]);
    acc[2] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(combine8(h[2][0], h[2][1])), d0, acc[2]);
    acc[3] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(combine8(h[3][0], h[3][1])), d1, acc[3]);
  }
  float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t b = full; b < nb; ++b) {
    const float d0 = block_scale(rec0 + kp, b, GPB), d1 = block_scale(rec1 + kp, b, GPB);
    t[0] = std::fma(float(hsum_i32(block_q8(q0 + b * kBlock, xa + b * kBlock))), d0, t[0]);
    t[1] = std::fma(float(hsum_i32(block_q8(q1 + b * kBlock, xa + b * kBlock))), d1, t[1]);
    t[2] = std::fma(float(hsum_i32(block_q8(q0 + b * kBlock, xb + b * kBlock))), d0, t[2]);
    t[3] = std::fma(float(hsum_i32(block_q8(q1 + b * kBlock, xb + b * kBlock))), d1, t[3]);
  }
  ya[0] = hsum(acc[0]) + t[0];
  ya[1] = hsum(acc[1]) + t[1];
  yb[0] = hsum(acc[2]) + t[2];
  yb[1] = hsum(acc[3]) + t[3];
}
#endif

// sum_b (d_b * xs_b * <q_b, xq_b> + m_b * xsum_b) over two q4 records at once (x is loaded once
// for both); the block count is even (Kp is a multiple of 64)
template <int GPB>
void dot_q4x2(const uint8_t* rec0, const uint8_t* rec1, const int8_t* x, const float* xs, const float* xsum,
              int64_t kp, float& y0, float& y1) {
  const int64_t nb = kp / kBlock, groups = kp / (GPB * kBlock), full = nb / 8 * 8;
  const int64_t qbytes = kp / 2;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), accm0 = _mm256_setzero_ps(),
         accm1 = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < full; b0 += 8) {
    __m256i h0[2], h1[2];
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {  // blocks b0 + 4 half .. + 3: two pairs
      const int64_t b = b0 + 4 * half;
      __m256i a0, a1, a2, a3, c0, c1, c2, c3;
      pair_q4(rec0 + b * 16, x + b * kBlock, a0, a1);
      pair_q4(rec1 + b * 16, x + b * kBlock, c0, c1);
      pair_q4(rec0 + b * 16 + 32, x + b * kBlock + 64, a2, a3);
      pair_q4(rec1 + b * 16 + 32, x + b * kBlock + 64, c2, c3);
      h0[half] = hadd4(a0, a1, a2, a3);
      h1[half] = hadd4(c0, c1, c2, c3);
    }
    const __m256i s0 = combine8(h0[0], h0[1]), s1 = combine8(h1[0], h1[1]);
    const __m256 xsv = _mm256_loadu_ps(xs + b0), sumv = _mm256_loadu_ps(xsum + b0);
    const uint8_t* d0 = rec0 + qbytes;
    const uint8_t* d1 = rec1 + qbytes;
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(scales8<GPB>(d0, b0), xsv), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(scales8<GPB>(d1, b0), xsv), acc1);
    accm0 = _mm256_fmadd_ps(scales8<GPB>(d0 + 2 * groups, b0), sumv, accm0);
    accm1 = _mm256_fmadd_ps(scales8<GPB>(d1 + 2 * groups, b0), sumv, accm1);
  }
  float t0 = 0.0f, t1 = 0.0f;
  for (int64_t b = full; b < nb; b += 2) {
    __m256i a0, a1, c0, c1;
    pair_q4(rec0 + b * 16, x + b * kBlock, a0, a1);
    pair_q4(rec1 + b * 16, x + b * kBlock, c0, c1);
    const uint8_t* d0 = rec0 + qbytes;
    const uint8_t* d1 = rec1 + qbytes;
    for (int i = 0; i < 2; ++i) {
      const int64_t bb = b + i;
      t0 += float(hsum_i32(i ? a1 : a0)) * block_scale(d0, bb, GPB) * xs[bb] + block_scale(d0 + 2 * groups, bb, GPB) * xsum[bb];
      t1 += float(hsum_i32(i ? c1 : c0)) * block_scale(d1, bb, GPB) * xs[bb] + block_scale(d1 + 2 * groups, bb, GPB) * xsum[bb];
    }
  }
  y0 = hsum(_mm256_add_ps(acc0, accm0)) + t0;
  y1 = hsum(_mm256_add_ps(acc1, accm1)) + t1;
}
#else
template <int GPB>
float dot_q8(const uint8_t* rec, const int16_t* x, int64_t kp) {
  const int8_t* q = reinterpret_cast<const int8_t*>(rec);
  float acc = 0.0f;
  for (int64_t b = 0; b < kp / kBlock; ++b) {
    int32_t s = 0;
    for (int64_t k = b * kBlock; k < (b + 1) * kBlock; ++k) s += int32_t(q[k]) * int32_t(x[k]);
    acc += float(s) * block_scale(rec + kp, b, GPB);
  }
  return acc;
}

template <int GPB>
void dot_q8x2(const uint8_t* rec0, const uint8_t* rec1, const int16_t* x, int64_t kp, float& y0, float& y1) {
  y0 = dot_q8<GPB>(rec0, x, kp);
  y1 = dot_q8<GPB>(rec1, x, kp);
}

template <int GPB>
float dot_q4(const uint8_t* rec, const int8_t* x, const float* xs, const float* xsum, int64_t kp) {
  const int64_t groups = kp / (GPB * kBlock);
  const uint8_t* d = rec + kp / 2;
  float acc = 0.0f;
  for (int64_t b = 0; b < kp / kBlock; ++b) {
    const uint8_t* w = rec + (b / 2) * 32;
    const int shift = (b & 1) * 4;
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += int32_t((w[j] >> shift) & 15) * x[b * kBlock + j];
    acc += float(s) * block_scale(d, b, GPB) * xs[b] + block_scale(d + 2 * groups, b, GPB) * xsum[b];
  }
  return acc;
}

template <int GPB>
void dot_q4x2(const uint8_t* rec0, const uint8_t* rec1, const int8_t* x, const float* xs, const float* xsum,
              int64_t kp, float& y0, float& y1) {
  y0 = dot_q4<GPB>(rec0, x, xs, xsum, kp);
  y1 = dot_q4<GPB>(rec1, x, xs, xsum, kp);
}
#endif

// y[:, n0:n1] for rows M of x, two weight rows per pass (an odd last row is computed twice)
template <int GPB, QType T>
void rows_typed(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t rb = q_row_bytes(w.type, w.K, w.G), kp = q.kp, nb = kp / kBlock;
  for (int64_t n = n0; n < n1; n += 2) {
    const uint8_t* rec0 = w.data + n * rb;
    const uint8_t* rec1 = n + 1 < n1 ? rec0 + rb : rec0;
    prefetch_ahead(rec0, rb, n1 - n, 2);
    int64_t m = 0;
#if defined(FASTLM_Q8_TWO_ROWS)
    if constexpr (T == QType::kQ8) {
      for (; m + 1 < M; m += 2) {
        float ya[2], yb[2];
        dot_q8x2x2<GPB>(rec0, rec1, q.x16.data() + m * kp, q.x16.data() + (m + 1) * kp, kp, ya, yb);
        for (int r = 0; r < 2; ++r) {  // (as the one-row loop below writes them)
          float y0 = r ? yb[0] : ya[0], y1 = r ? yb[1] : ya[1];
          y0 *= q.row_scale[size_t(m + r)];
          y1 *= q.row_scale[size_t(m + r)];
          y[(m + r) * ldy + n] = y0 + (w.bias ? w.bias[n] : 0.0f);
          if (n + 1 < n1) y[(m + r) * ldy + n + 1] = y1 + (w.bias ? w.bias[n + 1] : 0.0f);
        }
      }
    }
#endif
    for (; m < M; ++m) {
      float y0, y1;
      if constexpr (T == QType::kQ8) {
        dot_q8x2<GPB>(rec0, rec1, q.x16.data() + m * kp, kp, y0, y1);
        y0 *= q.row_scale[size_t(m)];
        y1 *= q.row_scale[size_t(m)];
      } else {
        dot_q4x2<GPB>(rec0, rec1, q.x8.data() + m * kp, q.blk_scale.data() + m * nb, q.blk_sum.data() + m * nb, kp,
                      y0, y1);
      }
      y[m * ldy + n] = y0 + (w.bias ? w.bias[n] : 0.0f);
      if (n + 1 < n1) y[m * ldy + n + 1] = y1 + (w.bias ? w.bias[n + 1] : 0.0f);
    }
  }
}

template <QType T>
void rows_of(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t gpb = w.G / kBlock;
  if (gpb == 1) return rows_typed<1, T>(w, q, M, n0, n1, y, ldy);
  if (gpb == 2) return rows_typed<2, T>(w, q, M, n0, n1, y, ldy);
  rows_typed<4, T>(w, q, M, n0, n1, y, ldy);
}

void rows(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  if (w.type == QType::kQ8) return rows_of<QType::kQ8>(w, q, M, n0, n1, y, ldy);
  rows_of<QType::kQ4>(w, q, M, n0, n1, y, ldy);
}

struct PanelSource {
  const QWeight* parts;
  int n_parts;
  int64_t N;
};

// rows n0 .. n0 + NR - 1 of the parts stacked along N, as a (K, NR) panel
#if defined(__AVX2__)
// rows r[0..7] (8 floats each, from column k) -> out + t * ld for t = 0..7 (column t of the block)
FASTLM_INLINE void transpose8(const float* const (&r)[8], int64_t k, float* out, int64_t ld) {
  __m256 a[8], b[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(r[i] + k);
  for (int i = 0; i < 8; i += 2) {
    b[i] = _mm256_unpacklo_ps(a[i], a[i + 1]);
    b[i + 1] = _mm256_unpackhi_ps(a[i], a[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    a[i] = _mm256_shuffle_ps(b[i], b[i + 2], 0x44);
    a[i + 1] = _mm256_shuffle_ps(b[i], b[i + 2], 0xee);
    a[i + 2] = _mm256_shuffle_ps(b[i + 1], b[i + 3], 0x44);
    a[i + 3] = _mm256_shuffle_ps(b[i + 1], b[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * ld, _mm256_permute2f128_ps(a[i], a[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * ld, _mm256_permute2f128_ps(a[i], a[i + 4], 0x31));
  }
}
#endif

// rows n0 .. n0 + NR - 1 of the parts stacked along N, as a (K, NR) panel: eight rows at a time
// are dequantized, then written across in 8 x 8 transposed blocks (whole cache lines of the panel,
// not one float per line)
void fill_panel(const void* ctx, int64_t n0, float* panel) {
  const PanelSource& src = *static_cast<const PanelSource*>(ctx);
  const int nr = gemm_panel_width();
  const int64_t K = src.parts[0].K;
  thread_local std::vector<float> rows;
  rows.resize(size_t(8 * K));
  for (int j0 = 0; j0 < nr; j0 += 8) {
    const float* r[8];
    for (int i = 0; i < 8; ++i) {
      float* dst = rows.data() + i * K;
      r[i] = dst;
      int64_t n = n0 + j0 + i, p = 0;
      while (p < src.n_parts && n >= src.parts[p].N) n -= src.parts[p++].N;
      if (p == src.n_parts) std::memset(dst, 0, size_t(K) * sizeof(float));
      else q_dequantize_row(src.parts[p], n, dst);
    }
    int64_t k = 0;
#if defined(__AVX2__)
    for (; k + 8 <= K; k += 8) transpose8(r, k, panel + k * nr + j0, nr);
#endif
    for (; k < K; ++k)
      for (int i = 0; i < 8; ++i) panel[k * nr + j0 + i] = r[i][k];
  }
}

}  // namespace

void q_quantize(const float* w, int64_t N, int64_t K, QType type, int64_t G, uint8_t* out) {
  const int64_t rb = q_row_bytes(type, K, G);
  parallel_range(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) q_quantize_row(w + n * K, K, type, G, out + n * rb);
  });
}

void q_dequantize_row(const QWeight& w, int64_t n, float* out) {
  if (q_is_ggml(w.type)) return ggml_dequantize_row(w, n, out);
  const int64_t kp = q_padded_k(w.type, w.K, w.G), groups = kp / w.G;
  const uint8_t* rec = w.data + n * q_row_bytes(w.type, w.K, w.G);
  uint16_t h;
  if (w.type == QType::kQ8) {
    for (int64_t g = 0; g < groups; ++g) {
      std::memcpy(&h, rec + kp + 2 * g, 2);
      const float d = half_to_float(h);
      const int64_t k0 = g * w.G, k1 = std::min(w.K, k0 + w.G);
      int64_t k = k0;
#if defined(__AVX2__)
      const __m256 dv = _mm256_set1_ps(d);
      for (; k + 8 <= k1; k += 8) {
        int64_t v;
        std::memcpy(&v, rec + k, 8);
        _mm256_storeu_ps(out + k, _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)))));
      }
#endif
      for (; k < k1; ++k) out[k] = d * float(int8_t(rec[k]));
    }
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    std::memcpy(&h, rec + kp / 2 + 2 * g, 2);
    const float d = half_to_float(h);
    std::memcpy(&h, rec + kp / 2 + 2 * groups + 2 * g, 2);
    const float m = half_to_float(h);
    const int64_t k0 = g * w.G, k1 = std::min(w.K, k0 + w.G);
    int64_t k = k0;
#if defined(__AVX2__)
    const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
    for (; k + 8 <= k1 && (k % 32) + 8 <= 32; k += 8) {  // 8 elements of one 32-block: one nibble half
      int64_t v;
      std::memcpy(&v, rec + (k / 64) * 32 + k % 32, 8);
      __m128i b = _mm_cvtsi64_si128(v);
      if ((k / 32) & 1) b = _mm_srli_epi16(b, 4);
      b = _mm_and_si128(b, _mm_set1_epi8(0x0f));
      _mm256_storeu_ps(out + k, _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), mv));
    }
#endif
    for (; k < k1; ++k) {
      const uint8_t byte = rec[(k / 64) * 32 + k % 32];
      out[k] = d * float((k / 32) & 1 ? byte >> 4 : byte & 15) + m;
    }
  }
}

void q_matmul(const QMatmulArgs& a) {
  const QWeight& w0 = a.parts[0];
  int64_t N = 0;
  for (int p = 0; p < a.n_parts; ++p) N += a.parts[p].N;
  if (a.M >= kDequantMinRows) {
    const PanelSource src{a.parts, a.n_parts, N};
    // bias per part: added after the GEMM (the panel GEMM takes one bias vector)
    gemm_fill_panels(a.x, a.M, a.K, N, fill_panel, &src, nullptr, a.y, a.ldy);
    int64_t off = 0;
    for (int p = 0; p < a.n_parts; ++p) {
      if (a.parts[p].bias)
        for (int64_t m = 0; m < a.M; ++m)
          for (int64_t n = 0; n < a.parts[p].N; ++n) a.y[m * a.ldy + off + n] += a.parts[p].bias[n];
      off += a.parts[p].N;
    }
    return;
  }
  if (q_is_ggml(w0.type)) return ggml_matvec(a);
  thread_local QuantX q;  // the caller's thread; workers read it through the reference below
  q.kp = q_padded_k(w0.type, a.K, w0.G);
  if (w0.type == QType::kQ8) quantize_x16(a.x, a.M, a.K, q.kp, q); else quantize_x8(a.x, a.M, a.K, q.kp, q);
  const QuantX& qx = q;
  over_parts(a, [&](const QWeight& w, int64_t n0, int64_t n1, float* y) { rows(w, qx, a.M, n0, n1, y, a.ldy); });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
