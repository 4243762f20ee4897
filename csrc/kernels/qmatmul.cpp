// quantized linear layers: the q8 / q4 weight records of kernels.h, their round-to-nearest
// quantizer, and y = x @ W^T over them.
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

#include "kernels/half.h"
#include "kernels/isa.h"
#include "runtime/threadpool.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int64_t kBlock = 32;          // the dot-product block, and the q4 nibble layout's unit
constexpr int64_t kDequantMinRows = 9;  // from here a panel dequantized once feeds enough rows

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
  const int64_t nb = kp / kBlock;
  q.x8.assign(size_t(M * kp), 0);
  q.blk_scale.assign(size_t(M * nb), 0.0f);
  q.blk_sum.assign(size_t(M * nb), 0.0f);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * kBlock, k1 = std::min(K, k0 + kBlock);
      const float* xr = x + m * K;
      float amax = 0.0f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(xr[k]));
      const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      int sum = 0;
      int8_t* out = q.x8.data() + m * kp;
      for (int64_t k = k0; k < k1; ++k) {
        const int v = int(std::nearbyint(std::min(127.0f, std::max(-127.0f, xr[k] * inv))));
        out[k] = int8_t(v);
        sum += v;
      }
      q.blk_scale[size_t(m * nb + b)] = s;
      q.blk_sum[size_t(m * nb + b)] = s * float(sum);
    }
  }
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

FASTLM_INLINE __m256i block_q4(const uint8_t* w, const int8_t* x) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  const __m256i nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
  const __m256i p = _mm256_maddubs_epi16(nib, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// 8 vectors of 8 int32 -> one vector of their 8 sums, in order
FASTLM_INLINE __m256i reduce8(const __m256i (&s)[8]) {
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
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

FASTLM_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

FASTLM_INLINE int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// sum_b d_b * <w_b, x_b> over a q8 record (without the row's activation scale)
template <int GPB>
float dot_q8(const uint8_t* rec, const int16_t* x, int64_t kp) {
  const int8_t* q = reinterpret_cast<const int8_t*>(rec);
  const uint8_t* d = rec + kp;
  const int64_t nb = kp / kBlock, full = nb / 8 * 8;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < full; b0 += 8) {
    __m256i s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) s[i] = block_q8(q + (b0 + i) * kBlock, x + (b0 + i) * kBlock);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(s)), scales8<GPB>(d, b0), acc);
  }
  float tail = 0.0f;
  for (int64_t b = full; b < nb; ++b)
    tail += float(hsum_i32(block_q8(q + b * kBlock, x + b * kBlock))) * block_scale(d, b, GPB);
  return hsum(acc) + tail;
}

// sum_b (d_b * xs_b * <q_b, xq_b> + m_b * xsum_b) over a q4 record
template <int GPB>
float dot_q4(const uint8_t* rec, const int8_t* x, const float* xs, const float* xsum, int64_t kp) {
  const int64_t nb = kp / kBlock, groups = kp / (GPB * kBlock), full = nb / 8 * 8;
  const uint8_t* d = rec + kp / 2;
  const uint8_t* mins = d + 2 * groups;
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < full; b0 += 8) {
    __m256i s[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) s[i] = block_q4(rec + (b0 + i) * (kBlock / 2), x + (b0 + i) * kBlock);
    const __m256 dx = _mm256_mul_ps(scales8<GPB>(d, b0), _mm256_loadu_ps(xs + b0));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(s)), dx, acc);
    accm = _mm256_fmadd_ps(scales8<GPB>(mins, b0), _mm256_loadu_ps(xsum + b0), accm);
  }
  float tail = 0.0f;
  for (int64_t b = full; b < nb; ++b)
    tail += float(hsum_i32(block_q4(rec + b * (kBlock / 2), x + b * kBlock))) * block_scale(d, b, GPB) * xs[b] +
            block_scale(mins, b, GPB) * xsum[b];
  return hsum(_mm256_add_ps(acc, accm)) + tail;
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
float dot_q4(const uint8_t* rec, const int8_t* x, const float* xs, const float* xsum, int64_t kp) {
  const int64_t groups = kp / (GPB * kBlock);
  const uint8_t* d = rec + kp / 2;
  float acc = 0.0f;
  for (int64_t b = 0; b < kp / kBlock; ++b) {
    const uint8_t* w = rec + b * (kBlock / 2);
    int32_t s = 0;
    for (int j = 0; j < 16; ++j) s += int32_t(w[j] & 15) * x[b * kBlock + j] + int32_t(w[j] >> 4) * x[b * kBlock + 16 + j];
    acc += float(s) * block_scale(d, b, GPB) * xs[b] + block_scale(d + 2 * groups, b, GPB) * xsum[b];
  }
  return acc;
}
#endif

template <int GPB>
void rows_q8(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t rb = q_row_bytes(w.type, w.K, w.G), kp = q.kp;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* rec = w.data + n * rb;
    __builtin_prefetch(rec + 4 * rb);
    for (int64_t m = 0; m < M; ++m)
      y[m * ldy + n] = dot_q8<GPB>(rec, q.x16.data() + m * kp, kp) * q.row_scale[size_t(m)] + (w.bias ? w.bias[n] : 0.0f);
  }
}

template <int GPB>
void rows_q4(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t rb = q_row_bytes(w.type, w.K, w.G), kp = q.kp, nb = kp / kBlock;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* rec = w.data + n * rb;
    __builtin_prefetch(rec + 4 * rb);
    for (int64_t m = 0; m < M; ++m)
      y[m * ldy + n] = dot_q4<GPB>(rec, q.x8.data() + m * kp, q.blk_scale.data() + m * nb, q.blk_sum.data() + m * nb, kp) +
                       (w.bias ? w.bias[n] : 0.0f);
  }
}

void rows(const QWeight& w, const QuantX& q, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t gpb = w.G / kBlock;
  if (w.type == QType::kQ8) {
    if (gpb == 1) return rows_q8<1>(w, q, M, n0, n1, y, ldy);
    if (gpb == 2) return rows_q8<2>(w, q, M, n0, n1, y, ldy);
    return rows_q8<4>(w, q, M, n0, n1, y, ldy);
  }
  if (gpb == 1) return rows_q4<1>(w, q, M, n0, n1, y, ldy);
  if (gpb == 2) return rows_q4<2>(w, q, M, n0, n1, y, ldy);
  rows_q4<4>(w, q, M, n0, n1, y, ldy);
}

struct PanelSource {
  const QWeight* parts;
  int n_parts;
  int64_t N;
};

// rows n0 .. n0 + NR - 1 of the parts stacked along N, as a (K, NR) panel
void fill_panel(const void* ctx, int64_t n0, float* panel) {
  const PanelSource& src = *static_cast<const PanelSource*>(ctx);
  const int nr = gemm_panel_width();
  const int64_t K = src.parts[0].K;
  thread_local std::vector<float> row;
  row.resize(size_t(K));
  for (int j = 0; j < nr; ++j) {
    int64_t n = n0 + j, p = 0;
    while (p < src.n_parts && n >= src.parts[p].N) n -= src.parts[p++].N;
    if (p == src.n_parts) {
      for (int64_t k = 0; k < K; ++k) panel[k * nr + j] = 0.0f;
      continue;
    }
    q_dequantize_row(src.parts[p], n, row.data());
    for (int64_t k = 0; k < K; ++k) panel[k * nr + j] = row[size_t(k)];
  }
}

}  // namespace

void q_quantize(const float* w, int64_t N, int64_t K, QType type, int64_t G, uint8_t* out) {
  const int64_t kp = q_padded_k(K, G), groups = kp / G, rb = q_row_bytes(type, K, G);
  parallel_range(N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* wr = w + n * K;
      uint8_t* rec = out + n * rb;
      std::memset(rec, 0, size_t(rb));
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t k0 = g * G, k1 = std::min(K, k0 + G);
        if (type == QType::kQ8) {
          float amax = 0.0f;
          for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(wr[k]));
          const uint16_t dh = float_to_half(amax / 127.0f);
          const float d = half_to_float(dh), inv = d > 0.0f ? 1.0f / d : 0.0f;
          for (int64_t k = k0; k < k1; ++k)
            rec[k] = uint8_t(int8_t(std::min(127.0f, std::max(-127.0f, std::nearbyint(wr[k] * inv)))));
          std::memcpy(rec + kp + 2 * g, &dh, 2);
        } else {
          float lo = k0 < k1 ? wr[k0] : 0.0f, hi = lo;
          for (int64_t k = k0; k < k1; ++k) lo = std::min(lo, wr[k]), hi = std::max(hi, wr[k]);
          if (k1 - k0 < G) lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);  // the zero padding
          const uint16_t mh = float_to_half(lo);
          const float m = half_to_float(mh);
          const uint16_t dh = float_to_half((hi - m) / 15.0f);
          const float d = half_to_float(dh), inv = d > 0.0f ? 1.0f / d : 0.0f;
          for (int64_t k = k0; k < k0 + G; ++k) {
            const float v = k < k1 ? wr[k] : 0.0f;
            const int qv = int(std::min(15.0f, std::max(0.0f, std::nearbyint((v - m) * inv))));
            const int64_t blk = k / kBlock, j = k % kBlock;
            uint8_t& byte = rec[blk * (kBlock / 2) + (j & 15)];
            byte = uint8_t(byte | (j < 16 ? qv : qv << 4));
          }
          std::memcpy(rec + kp / 2 + 2 * g, &dh, 2);
          std::memcpy(rec + kp / 2 + 2 * groups + 2 * g, &mh, 2);
        }
      }
    }
  });
}

void q_dequantize_row(const QWeight& w, int64_t n, float* out) {
  const int64_t kp = q_padded_k(w.K, w.G), groups = kp / w.G;
  const uint8_t* rec = w.data + n * q_row_bytes(w.type, w.K, w.G);
  uint16_t h;
  if (w.type == QType::kQ8) {
    for (int64_t g = 0; g < groups; ++g) {
      std::memcpy(&h, rec + kp + 2 * g, 2);
      const float d = half_to_float(h);
      for (int64_t k = g * w.G; k < std::min(w.K, (g + 1) * w.G); ++k) out[k] = d * float(int8_t(rec[k]));
    }
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    std::memcpy(&h, rec + kp / 2 + 2 * g, 2);
    const float d = half_to_float(h);
    std::memcpy(&h, rec + kp / 2 + 2 * groups + 2 * g, 2);
    const float m = half_to_float(h);
    for (int64_t k = g * w.G; k < std::min(w.K, (g + 1) * w.G); ++k) {
      const uint8_t byte = rec[(k / kBlock) * (kBlock / 2) + (k % kBlock & 15)];
      out[k] = d * float(k % kBlock < 16 ? byte & 15 : byte >> 4) + m;
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
  thread_local QuantX q;  // the caller's thread; workers read it through the reference below
  q.kp = q_padded_k(a.K, w0.G);
  if (w0.type == QType::kQ8) quantize_x16(a.x, a.M, a.K, q.kp, q); else quantize_x8(a.x, a.M, a.K, q.kp, q);
  const QuantX& qx = q;
  parallel_range(N, 16, [&](int64_t r0, int64_t r1) {
    int64_t off = 0;
    for (int p = 0; p < a.n_parts; ++p) {
      const QWeight& w = a.parts[p];
      const int64_t s = std::max(r0, off), e = std::min(r1, off + w.N);
      if (s < e) rows(w, qx, a.M, s - off, e - off, a.y + off, a.ldy);
      off += w.N;
    }
  });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
