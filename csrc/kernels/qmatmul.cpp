// quantized linear layers: y = x @ W^T over the q8 / q4 weight records of kernels.h (and their
// quantizer, qformat.h, spread over threads).
//
// decode (few rows of x): each weight row streams once and is dotted in 32-element blocks:
//   q8: int8 weights (sign-extended to int16) x int16 activations, vpmaddwd -> eight int32 partial
//       sums per block, converted and multiplied by the block's scale into eight float lanes (no
//       horizontal sums until the end); batched rows widen each weight block once for up to 8 rows;
//   q4: nibbles unpacked to bytes x int8 activations, vpmaddubsw + vpmaddwd -> int32 per block;
//       eight blocks' int32 vectors are reduced together (hadd tree) into one vector of 8 block
//       sums, converted once and multiplied by the 8 block scales; the minimums add m * (sum of the
//       block's activations), one FMA per 8 blocks.
// prefill (many rows) dequantizes NR-row panels into the float GEMM.
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
// q8 dots accumulate in lanes: each 32-block's eight int32 partial sums (exact) are converted and
// multiplied into eight float accumulators by the block's scale, broadcast from a float copy of the
// record's scales; one horizontal sum at the end. no hadds (two cycles each on the shuffle pipes
// here) and no scalar tail: K = 576's 18 blocks all go through the vector loop. every (weight row,
// x row) does exactly these ops in this order, one x row or sixteen, so a row gets the same bits
// alone or in a batch.

// the record's block scales as floats, one per 32-block (groups of G repeat theirs): eight fp16
// scales at a time through vcvtph2ps (the last few copied out first: no read past the record)
template <int GPB>
FASTLM_INLINE void block_scales(const uint8_t* scales, int64_t nb, float* out) {
  const int64_t groups = nb / GPB;
  float g[8];
  for (int64_t g0 = 0; g0 < groups; g0 += 8) {
    const int64_t n = std::min<int64_t>(8, groups - g0);
    __m128i h;
    if (n == 8) {
      h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 2 * g0));
    } else {
      alignas(16) uint8_t tmp[16] = {};
      std::memcpy(tmp, scales + 2 * g0, size_t(2 * n));
      h = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
    }
    if constexpr (GPB == 1) {
      if (n == 8) {
        _mm256_storeu_ps(out + g0, _mm256_cvtph_ps(h));
        continue;
      }
    }
    _mm256_storeu_ps(g, _mm256_cvtph_ps(h));
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < GPB; ++j) out[(g0 + i) * GPB + j] = g[i];
  }
}

// one block's lane update: acc += float(<w_b, x_b> in 8 partial sums) * d
FASTLM_INLINE __m256 lane_q8(__m256i wl, __m256i wh, const int16_t* x, __m256 d, __m256 acc) {
  const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(wl, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
                                     _mm256_madd_epi16(wh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16))));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
}

FASTLM_INLINE __m256i widen16(const int8_t* q) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
}

// one x row against two records (decode of one sequence: x is loaded once for both)
void dot_q8_1x2(const uint8_t* rec0, const uint8_t* rec1, const float* d0, const float* d1, const int16_t* x,
                int64_t kp, float& y0, float& y1) {
  const int8_t* q0 = reinterpret_cast<const int8_t*>(rec0);
  const int8_t* q1 = reinterpret_cast<const int8_t*>(rec1);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (int64_t b = 0; b < kp / kBlock; ++b) {
    const int64_t k = b * kBlock;
    a0 = lane_q8(widen16(q0 + k), widen16(q0 + k + 16), x + k, _mm256_broadcast_ss(d0 + b), a0);
    a1 = lane_q8(widen16(q1 + k), widen16(q1 + k + 16), x + k, _mm256_broadcast_ss(d1 + b), a1);
  }
  y0 = hsum(a0);
  y1 = hsum(a1);
}

// R rows of x against one record, each weight block widened once for all of them (batched decode)
template <int R>
void dot_q8_rx1(const uint8_t* rec, const float* d, const int16_t* x, int64_t kp, float* y) {
  const int8_t* q = reinterpret_cast<const int8_t*>(rec);
  __m256 a[R];
  for (int r = 0; r < R; ++r) a[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < kp / kBlock; ++b) {
    const int64_t k = b * kBlock;
    const __m256i wl = widen16(q + k), wh = widen16(q + k + 16);
    const __m256 bd = _mm256_broadcast_ss(d + b);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = lane_q8(wl, wh, x + r * kp + k, bd, a[r]);
  }
  for (int r = 0; r < R; ++r) y[r] = hsum(a[r]);
}

// rows [m, m + n) of x (n <= 8) against one record
inline void dot_q8_rows(const uint8_t* rec, const float* d, const int16_t* x, int64_t kp, int n, float* y) {
  switch (n) {
    case 1: return dot_q8_rx1<1>(rec, d, x, kp, y);
    case 2: return dot_q8_rx1<2>(rec, d, x, kp, y);
    case 3: return dot_q8_rx1<3>(rec, d, x, kp, y);
    case 4: return dot_q8_rx1<4>(rec, d, x, kp, y);
    case 5: return dot_q8_rx1<5>(rec, d, x, kp, y);
    case 6: return dot_q8_rx1<6>(rec, d, x, kp, y);
    case 7: return dot_q8_rx1<7>(rec, d, x, kp, y);
    default: return dot_q8_rx1<8>(rec, d, x, kp, y);
  }
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

// output column n of row yr: dot * scale (q8: the row's activation scale; q4: 1) + bias, as one
// explicit fma on every path (a fusion left to the compiler could differ between paths)
FASTLM_INLINE void store_col(const QWeight& w, float dot, float scale, int64_t n, float* yr) {
  yr[n] = std::fma(dot, scale, w.bias ? w.bias[n] : 0.0f);
}

// y[:, n0:n1] for rows M of x, two weight rows per pass (an odd last row is computed twice)
template <int GPB, QType T>
void rows_typed(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t rb = q_row_bytes(w.type, w.K, w.G), kp = q.kp, nb = kp / kBlock;
#if defined(__AVX2__)
  thread_local std::vector<float> dbuf;  // q8: the pass's two records' block scales as floats
  if constexpr (T == QType::kQ8) dbuf.resize(size_t(2 * nb));
#endif
  for (int64_t n = n0; n < n1; n += 2) {
    const uint8_t* rec0 = w.data + n * rb;
    const uint8_t* rec1 = n + 1 < n1 ? rec0 + rb : rec0;
    const bool two = n + 1 < n1;
    prefetch_ahead(rec0, rb, n1 - n, 2);
    if constexpr (T == QType::kQ8) {
#if defined(__AVX2__)
      float* d0 = dbuf.data();
      float* d1 = d0 + nb;
      block_scales<GPB>(rec0 + kp, nb, d0);
      block_scales<GPB>(rec1 + kp, nb, d1);
      if (M == 1) {
        float y0, y1;
        dot_q8_1x2(rec0, rec1, d0, d1, q.x16.data(), kp, y0, y1);
        store_col(w, y0, q.row_scale[0], n, y);
        if (two) store_col(w, y1, q.row_scale[0], n + 1, y);
        continue;
      }
      for (int j = 0; j < (two ? 2 : 1); ++j) {
        for (int64_t m = 0; m < M; m += 8) {
          const int r = int(std::min<int64_t>(8, M - m));
          float out[8];
          dot_q8_rows(j ? rec1 : rec0, j ? d1 : d0, q.x16.data() + m * kp, kp, r, out);
          for (int i = 0; i < r; ++i) store_col(w, out[i], q.row_scale[size_t(m + i)], n + j, y + (m + i) * ldy);
        }
      }
      continue;
#else
      for (int64_t m = 0; m < M; ++m) {
        float y0, y1;
        dot_q8x2<GPB>(rec0, rec1, q.x16.data() + m * kp, kp, y0, y1);
        store_col(w, y0, q.row_scale[size_t(m)], n, y + m * ldy);
        if (two) store_col(w, y1, q.row_scale[size_t(m)], n + 1, y + m * ldy);
      }
      continue;
#endif
    } else {
      for (int64_t m = 0; m < M; ++m) {
        float y0, y1;
        dot_q4x2<GPB>(rec0, rec1, q.x8.data() + m * kp, q.blk_scale.data() + m * nb, q.blk_sum.data() + m * nb, kp,
                      y0, y1);
        store_col(w, y0, 1.0f, n, y + m * ldy);
        if (two) store_col(w, y1, 1.0f, n + 1, y + m * ldy);
      }
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
