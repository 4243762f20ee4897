// linear layers over GGUF block weights in their own bits (kernels/ggml_blocks.h): decode rows
// (few rows of x) dot each weight row against activations quantized to int8 in blocks of 32 (one
// float scale each, as ggml's Q8_0; finer than its Q8_K's 256), without expanding the weights:
//
//   each 32-element block of a weight row is unpacked in registers to 32 bytes of quants (nibbles,
//   high bits and 2-bit planes shifted and masked into place; IQ4's nibbles looked up with
//   vpshufb), dotted with the activations (vpdpbusd with VNNI, else vpmaddubsw + vpmaddwd) and the
//   eight blocks of 256 elements reduced together into 8 sums (or 8 sums of 16 for the types with
//   16-element sub-blocks: the low and high halves of four blocks). the float side is then one
//   multiply-add per 8 sub-blocks: sum * (sub-block scale * activation scale) + minimum *
//   (activation scale * the activations' sum), the last carrying each type's offset (Q6_K's -32,
//   Q5_0's -16, Q3_K's -4) so every quant stays unsigned and below 64. the IQ4 types' signed values
//   go through the sign trick (|w| * sign(x, w)) instead.
//
// the weight block is unpacked once per block and dotted with every row of x (batched decode).
// prefill (many rows) dequantizes panels into the float GEMM (qmatmul.cpp), exactly as the
// `gguf` package dequantizes (this file is compiled with -ffp-contract=off for that).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/threadpool.h"
#include "kernels/ggml_blocks.h"
#include "kernels/isa.h"
#include "kernels/qdot.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

using ggml::f16_at;

constexpr int kMaxRows = 16;  // decode batches; more rows go to the dequantized GEMM

// x quantized in blocks of 32 (qdot.h): q (M, K), d and s32 = d * sum per block (M, K / 32); for
// the 16-element sub-block types also d16 and s16 per half block, in the kernel's order
struct GgmlX {
  std::vector<int8_t> q;
  std::vector<float> d, s32, d16, s16;
};

void quantize_x(const float* x, int64_t M, int64_t K, bool halves, GgmlX& o) {
  o.q.resize(size_t(M * K));
  o.d.resize(size_t(M * K / 32));
  o.s32.resize(size_t(M * K / 32));
  o.d16.resize(halves ? size_t(M * K / 16) : 0);
  o.s16.resize(halves ? size_t(M * K / 16) : 0);
  quantize_blocks32(x, M, K, K, o.q.data(), o.d.data(), o.s32.data(), halves ? o.d16.data() : nullptr,
                    halves ? o.s16.data() : nullptr);
}

#if defined(__AVX2__)

FASTLM_INLINE __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
FASTLM_INLINE __m256i srl16(__m256i v, int n) { return _mm256_srl_epi16(v, _mm_cvtsi32_si128(n)); }
FASTLM_INLINE __m256i mask8(__m256i v, int m) { return _mm256_and_si256(v, _mm256_set1_epi8(char(m))); }

// 16 bytes -> 32 quants: the low nibbles (elements 0..15), then the high ones (16..31)
FASTLM_INLINE __m256i nibbles16(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), m = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// 32 bits -> 32 bytes of 0x10 where the bit is set (Q5_0 / Q5_1's fifth bits)
FASTLM_INLINE __m256i bit4_of(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                        3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(bits)), shuf), bit);
  return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(0x10));
}

FASTLM_INLINE __m256i iq4_lookup(__m256i nib) {
  const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(ggml::kIQ4Values)));
  return _mm256_shuffle_epi8(table, nib);
}

// 32-element block j of a block of type T as 32 quants
template <QType T>
FASTLM_INLINE __m256i load_quants(const uint8_t* blk, int j) {
  if constexpr (T == QType::kQ5_0) return _mm256_or_si256(nibbles16(blk + 6), bit4_of(blk + 2));
  if constexpr (T == QType::kQ5_1) return _mm256_or_si256(nibbles16(blk + 8), bit4_of(blk + 4));
  if constexpr (T == QType::kIQ4_NL) return iq4_lookup(nibbles16(blk + 2));
  if constexpr (T == QType::kIQ4_XS) return iq4_lookup(nibbles16(blk + 8 + 16 * j));
  const int c = j / 4, s = j % 4;  // the 2-bit-plane types: 128-element chunk c, shift 2 s
  if constexpr (T == QType::kQ2_K) return mask8(srl16(load256(blk + 16 + 32 * c), 2 * s), 3);
  if constexpr (T == QType::kQ3_K) {
    const __m256i lo = mask8(srl16(load256(blk + 32 + 32 * c), 2 * s), 3);
    return _mm256_or_si256(lo, _mm256_slli_epi16(mask8(srl16(load256(blk), j), 1), 2));
  }
  if constexpr (T == QType::kQ6_K) {
    const __m256i lo = mask8(srl16(load256(blk + 64 * c + 32 * (s % 2)), 4 * (s / 2)), 0x0f);
    return _mm256_or_si256(lo, _mm256_slli_epi16(mask8(srl16(load256(blk + 128 + 32 * c), 2 * s), 3), 4));
  }
  // Q4_K / Q5_K: 64-element chunk j / 2 of nibbles, low or high
  const uint8_t* qs = blk + (T == QType::kQ5_K ? 48 : 16);
  const __m256i lo = mask8(srl16(load256(qs + 32 * (j / 2)), 4 * (j % 2)), 0x0f);
  if constexpr (T == QType::kQ4_K) return lo;
  return _mm256_or_si256(lo, _mm256_slli_epi16(mask8(srl16(load256(blk + 16), j), 1), 4));
}

// the 8 int32 partial sums of 32 quants against 32 int8 activations (lanes 0..3: bytes 0..15)
template <bool SIGNED>
FASTLM_INLINE __m256i dot32(__m256i w, const int8_t* x) {
  __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  if constexpr (SIGNED) {
    xv = _mm256_sign_epi8(xv, w);
    w = _mm256_sign_epi8(w, w);
  }
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xv);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1));
#endif
}

// the scales and minimums of a group of 256 elements in the kernel's order: 8 (32-element
// sub-blocks, natural order) or 16 (16-element: per 128 elements the even sub-blocks, then the odd)
template <QType T>
FASTLM_INLINE void group_scales(const uint8_t* blk, int64_t bytes, int count, float* sc, float* mn) {
  constexpr GgmlTypeInfo info = ggml_type_info(T);
  if constexpr (info.qk == 32) {  // 8 blocks of 32, one fp16 scale each (and Q5_1's minimum)
    alignas(16) uint16_t d[8] = {}, m[8] = {};
    for (int j = 0; j < count; ++j) {
      std::memcpy(&d[j], blk + j * bytes, 2);
      if constexpr (T == QType::kQ5_1) std::memcpy(&m[j], blk + j * bytes + 2, 2);
    }
    const __m256 dv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d)));
    _mm256_store_ps(sc, dv);
    if constexpr (T == QType::kQ5_0) _mm256_store_ps(mn, _mm256_mul_ps(dv, _mm256_set1_ps(-16.0f)));
    if constexpr (T == QType::kQ5_1) _mm256_store_ps(mn, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(m))));
    if constexpr (T == QType::kIQ4_NL) _mm256_store_ps(mn, _mm256_setzero_ps());
    return;
  }
  // the K-quants: sub-block scales decoded in vectors (ggml_blocks.h's unpack_scales is the
  // plain form; the tests hold the two to the same results)
  const auto to_f = [](__m128i bytes8, bool is_signed) {  // 8 bytes -> 8 floats
    return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(bytes8) : _mm256_cvtepu8_epi32(bytes8));
  };
  // 16 signed sub-block scales (int8, in the kernel's order) times d; minimums off * scale
  const auto signed16 = [&](__m128i v, float d, float off) {
    const __m256 dv = _mm256_set1_ps(d), ov = _mm256_set1_ps(off);
    const __m256 s0 = _mm256_mul_ps(to_f(v, true), dv), s1 = _mm256_mul_ps(to_f(_mm_unpackhi_epi64(v, v), true), dv);
    _mm256_store_ps(sc, s0);
    _mm256_store_ps(sc + 8, s1);
    _mm256_store_ps(mn, _mm256_mul_ps(s0, ov));
    _mm256_store_ps(mn + 8, _mm256_mul_ps(s1, ov));
  };
  // per 128 elements the even 16-element sub-blocks, then the odd ones
  const __m128i order16 = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  if constexpr (T == QType::kQ4_K || T == QType::kQ5_K) {  // ggml's 12-byte 6-bit packing, as its AVX2 code
    uint32_t u[4];
    std::memcpy(u, blk + 4, 12);
    constexpr uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
    u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
    const uint32_t mins_lo = u[1] & m1;
    u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
    u[2] = mins_lo;
    u[0] &= m1;  // bytes 0..7: the scales, 8..15: the minimums
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
    uint16_t h[2];
    std::memcpy(h, blk, 4);
    _mm256_store_ps(sc, _mm256_mul_ps(to_f(v, false), _mm256_set1_ps(_cvtsh_ss(h[0]))));
    _mm256_store_ps(mn, _mm256_mul_ps(to_f(_mm_unpackhi_epi64(v, v), false), _mm256_set1_ps(-_cvtsh_ss(h[1]))));
  } else if constexpr (T == QType::kQ6_K) {
    uint16_t h;
    std::memcpy(&h, blk + 208, 2);
    signed16(_mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)), order16), _cvtsh_ss(h),
             -32.0f);
  } else if constexpr (T == QType::kQ3_K) {  // 16 six-bit scales stored + 32, as ggml's AVX2 code unpacks them
    uint32_t a[4];
    std::memcpy(a, blk + 96, 12);
    constexpr uint32_t m1 = 0x03030303, m2 = 0x0f0f0f0f;
    const uint32_t t = a[2];
    a[2] = ((a[0] >> 4) & m2) | (((t >> 4) & m1) << 4);
    a[3] = ((a[1] >> 4) & m2) | (((t >> 6) & m1) << 4);
    a[0] = (a[0] & m2) | ((t & m1) << 4);
    a[1] = (a[1] & m2) | (((t >> 2) & m1) << 4);
    const __m128i v = _mm_sub_epi8(_mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)), order16),
                                   _mm_set1_epi8(32));
    uint16_t h;
    std::memcpy(&h, blk + 108, 2);
    signed16(v, _cvtsh_ss(h), -4.0f);
  } else if constexpr (T == QType::kQ2_K) {
    uint16_t h[2];
    std::memcpy(h, blk + 80, 4);
    const __m128i v = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)), order16);
    const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0f)), hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0f));
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(h[0])), dmin = _mm256_set1_ps(-_cvtsh_ss(h[1]));
    _mm256_store_ps(sc, _mm256_mul_ps(to_f(lo, false), d));
    _mm256_store_ps(sc + 8, _mm256_mul_ps(to_f(_mm_unpackhi_epi64(lo, lo), false), d));
    _mm256_store_ps(mn, _mm256_mul_ps(to_f(hi, false), dmin));
    _mm256_store_ps(mn + 8, _mm256_mul_ps(to_f(_mm_unpackhi_epi64(hi, hi), false), dmin));
  } else if constexpr (T == QType::kIQ4_XS) {
    uint16_t h[2];
    uint32_t lo4;
    std::memcpy(h, blk, 4);
    std::memcpy(&lo4, blk + 4, 4);
    const __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(lo4)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                                        _mm256_set1_epi32(0xf));
    const __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(h[1]), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                                        _mm256_set1_epi32(3));
    const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
    _mm256_store_ps(sc, _mm256_mul_ps(_mm256_cvtepi32_ps(ls), _mm256_set1_ps(_cvtsh_ss(h[0]))));
    _mm256_store_ps(mn, _mm256_setzero_ps());
  }
}

// rows n0 .. n1 of w against the M rows of x: y[m * ldy + n]
template <QType T>
void rows_typed(const QWeight& w, const GgmlX& x, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  constexpr GgmlTypeInfo info = ggml_type_info(T);
  const int64_t K = w.K, rb = q_row_bytes(T, K, w.G), nb32 = K / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.data + n * rb;
    prefetch_ahead(row, rb, n1 - n, 1);
    __m256 acc[kMaxRows];
    for (int64_t m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb32; b0 += 8) {  // 256 elements: one K-block, or 8 (fewer at the end) of 32
      const int count = int(std::min<int64_t>(8, nb32 - b0));
      const uint8_t* blk = row + (info.qk == 32 ? b0 * info.bytes : (b0 / 8) * info.bytes);
      __m256i wq[8];
      if constexpr (info.qk == 32) {
        for (int j = 0; j < count; ++j) wq[j] = load_quants<T>(blk + j * info.bytes, 0);
      } else {
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) wq[j] = load_quants<T>(blk, j);
      }
      alignas(32) float sc[16], mn[16];
      group_scales<T>(blk, info.bytes, count, sc, mn);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xq = x.q.data() + m * K + b0 * 32;
        __m256i v[8];
        for (int j = 0; j < 8; ++j) v[j] = j < count ? dot32<info.is_signed>(wq[j], xq + 32 * j) : _mm256_setzero_si256();
        if constexpr (info.sub == 32) {
          const __m256i sums = combine8(hadd4(v[0], v[1], v[2], v[3]), hadd4(v[4], v[5], v[6], v[7]));
          const float* xd = x.d.data() + m * nb32 + b0;
          const float* xs = x.s32.data() + m * nb32 + b0;
          __m256 dx, sx;
          if (count == 8) {
            dx = _mm256_loadu_ps(xd);
            sx = _mm256_loadu_ps(xs);
          } else {  // the last blocks of a row (scales past them are zero)
            alignas(32) float d[8] = {}, s[8] = {};
            std::memcpy(d, xd, sizeof(float) * size_t(count));
            std::memcpy(s, xs, sizeof(float) * size_t(count));
            dx = _mm256_load_ps(d);
            sx = _mm256_load_ps(s);
          }
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(_mm256_load_ps(sc), dx), acc[m]);
          if constexpr (!info.is_signed) acc[m] = _mm256_fmadd_ps(_mm256_load_ps(mn), sx, acc[m]);
        } else {  // 16-element sub-blocks: two groups of 4 blocks
          const float* d16 = x.d16.data() + m * nb32 * 2 + b0 * 2;
          const float* s16 = x.s16.data() + m * nb32 * 2 + b0 * 2;
          const __m256i s0 = hadd4(v[0], v[1], v[2], v[3]), s1 = hadd4(v[4], v[5], v[6], v[7]);
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(_mm256_load_ps(sc), _mm256_loadu_ps(d16)), acc[m]);
          acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(_mm256_load_ps(sc + 8), _mm256_loadu_ps(d16 + 8)),
                                   acc[m]);
          acc[m] = _mm256_fmadd_ps(_mm256_load_ps(mn), _mm256_loadu_ps(s16), acc[m]);
          acc[m] = _mm256_fmadd_ps(_mm256_load_ps(mn + 8), _mm256_loadu_ps(s16 + 8), acc[m]);
        }
      }
    }
    for (int64_t m = 0; m < M; ++m) y[m * ldy + n] = hsum(acc[m]) + (w.bias ? w.bias[n] : 0.0f);
  }
}

#else  // the portable baseline: plain loops over the unpacked form

template <QType T>
void rows_typed(const QWeight& w, const GgmlX& x, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  constexpr GgmlTypeInfo info = ggml_type_info(T);
  const int64_t K = w.K, rb = q_row_bytes(T, K, w.G), nb32 = K / 32;
  uint8_t q[256];
  float sc[16], mn[16];
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.data + n * rb;
    float acc[kMaxRows] = {};
    for (int64_t b = 0; b < K / info.qk; ++b) {
      ggml::unpack_block(T, row + b * info.bytes, q, sc, mn);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xq = x.q.data() + m * K + b * info.qk;
        for (int s = 0; s < int(info.qk / info.sub); ++s) {
          int32_t dot = 0, sum = 0;
          for (int k = s * info.sub; k < (s + 1) * info.sub; ++k) {
            dot += (info.is_signed ? int32_t(int8_t(q[k])) : int32_t(q[k])) * xq[k];
            sum += xq[k];
          }
          const float dx = x.d[size_t(m * nb32 + (b * info.qk + s * info.sub) / 32)];
          acc[m] += sc[s] * dx * float(dot) + mn[s] * dx * float(sum);
        }
      }
    }
    for (int64_t m = 0; m < M; ++m) y[m * ldy + n] = acc[m] + (w.bias ? w.bias[n] : 0.0f);
  }
}

#endif

void rows(const QWeight& w, const GgmlX& x, int64_t M, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  switch (w.type) {
    case QType::kQ5_0: return rows_typed<QType::kQ5_0>(w, x, M, n0, n1, y, ldy);
    case QType::kQ5_1: return rows_typed<QType::kQ5_1>(w, x, M, n0, n1, y, ldy);
    case QType::kQ2_K: return rows_typed<QType::kQ2_K>(w, x, M, n0, n1, y, ldy);
    case QType::kQ3_K: return rows_typed<QType::kQ3_K>(w, x, M, n0, n1, y, ldy);
    case QType::kQ4_K: return rows_typed<QType::kQ4_K>(w, x, M, n0, n1, y, ldy);
    case QType::kQ5_K: return rows_typed<QType::kQ5_K>(w, x, M, n0, n1, y, ldy);
    case QType::kQ6_K: return rows_typed<QType::kQ6_K>(w, x, M, n0, n1, y, ldy);
    case QType::kIQ4_NL: return rows_typed<QType::kIQ4_NL>(w, x, M, n0, n1, y, ldy);
    case QType::kIQ4_XS: return rows_typed<QType::kIQ4_XS>(w, x, M, n0, n1, y, ldy);
    default: return;
  }
}

}  // namespace

void ggml_dequantize_row(const QWeight& w, int64_t n, float* out) {
  ggml::dequantize_row(w.type, w.data + n * q_row_bytes(w.type, w.K, w.G), w.K, out);
}

void ggml_matvec(const QMatmulArgs& a) {
  bool halves = false;
  for (int p = 0; p < a.n_parts; ++p) halves = halves || ggml_type_info(a.parts[p].type).sub == 16;
  thread_local GgmlX x;  // the caller's thread; workers read it through the reference below
  quantize_x(a.x, a.M, a.K, halves, x);
  const GgmlX& xr = x;
  over_parts(a, [&](const QWeight& w, int64_t n0, int64_t n1, float* y) { rows(w, xr, a.M, n0, n1, y, a.ldy); });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
