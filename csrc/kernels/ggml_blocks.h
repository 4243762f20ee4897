// the GGUF (ggml) block formats fastlm runs in their own bits: layouts as structs (ggml-common.h's
// field order, sizes checked), the exact dequantization of a block, and the "unpack" form the
// dot products use. plain C++, the same on every ISA.
//
// dequantize_block follows the formulas of the `gguf` package (gguf.quants), operation for
// operation in float32, so the result equals gguf.quants.dequantize bit for bit (this header is
// compiled with -ffp-contract=off: a fused multiply-add would round once instead of twice).
//
// unpack_block gives each element as w = sc[s] * q + mn[s] for its sub-block s (16 or 32
// elements), with q an unsigned integer of at most 6 bits (below 64, so vpmaddubsw pairs never
// saturate), or, for the IQ4 types (SIGNED), a signed int8 lookup value with mn = 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/half.h"
#include "kernels/kernels.h"

namespace fastlm {
namespace ggml {

constexpr int64_t QK_K = 256;

struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "ggml Q5_0 / Q5_1 block sizes");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "ggml Q2_K / Q3_K block sizes");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176, "ggml Q4_K / Q5_K block sizes");
static_assert(sizeof(BlockQ6_K) == 210, "ggml Q6_K block size");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "ggml IQ4_NL / IQ4_XS block sizes");

// IQ4_NL / IQ4_XS: the 16 values a nibble indexes
alignas(16) inline constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                      1,    13,   25,  38,  53,  69,  89,  113};

// blocks are read through byte offsets (a row of 22-byte blocks puts fields at any even address,
// and the mmap of a file promises no more): a field is its struct's offsetof
#define FASTLM_FIELD(Block, field) (blk + offsetof(Block, field))
inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// Q4_K / Q5_K: 8 six-bit scales and 8 six-bit minimums packed in 12 bytes (ggml's get_scale_min_k4)
inline void scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q3_K: 16 six-bit scales (stored + 32) in 12 bytes: the low nibbles in bytes 0..7, the high two
// bits in bytes 8..11
inline int scale_q3_k(const uint8_t* s, int i) {
  const int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
  const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

inline int scale_iq4_xs(const uint8_t* blk, int ib) {
  uint16_t h;
  std::memcpy(&h, FASTLM_FIELD(BlockIQ4_XS, scales_h), 2);
  const int lo = (FASTLM_FIELD(BlockIQ4_XS, scales_l)[ib / 2] >> (4 * (ib % 2))) & 0xF;
  return (lo | (((h >> (2 * ib)) & 3) << 4)) - 32;
}

// the quant of element e of a block, before any offset: the bit layout of each type
inline int quant_q5(const uint8_t* qh, const uint8_t* qs, int e) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  return ((e < 16 ? qs[e] : qs[e - 16] >> 4) & 0xF) | (((h >> e) & 1) << 4);
}
inline int quant_q2_k(const uint8_t* blk, int e) {  // e = c * 128 + s * 32 + l
  return (FASTLM_FIELD(BlockQ2_K, qs)[(e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
}
inline int quant_q3_k(const uint8_t* blk, int e) {  // the low two bits plus 4 where hmask has the bit
  const int lo = (FASTLM_FIELD(BlockQ3_K, qs)[(e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
  return lo + 4 * ((FASTLM_FIELD(BlockQ3_K, hmask)[e % 32] >> (e / 32)) & 1);
}
inline int quant_q4_k(const uint8_t* qs, int e) {  // e = c * 64 + s * 32 + l
  return (qs[(e / 64) * 32 + e % 32] >> (4 * ((e / 32) % 2))) & 0xF;
}
inline int quant_q5_k(const uint8_t* blk, int e) {
  return quant_q4_k(FASTLM_FIELD(BlockQ5_K, qs), e) | (((FASTLM_FIELD(BlockQ5_K, qh)[e % 32] >> (e / 32)) & 1) << 4);
}
inline int quant_q6_k(const uint8_t* blk, int e) {  // e = c * 128 + s * 32 + l
  const int c = e / 128, s = (e / 32) % 4, l = e % 32;
  const int lo = (FASTLM_FIELD(BlockQ6_K, ql)[c * 64 + (s % 2) * 32 + l] >> (4 * (s / 2))) & 0xF;
  const int hi = (FASTLM_FIELD(BlockQ6_K, qh)[c * 32 + l] >> (2 * s)) & 3;
  return lo | (hi << 4);
}
inline int nibble_iq4_xs(const uint8_t* blk, int e) {  // sub-block e / 32: 16 bytes, low nibbles first
  const uint8_t b = FASTLM_FIELD(BlockIQ4_XS, qs)[(e / 32) * 16 + e % 16];
  return (e % 32 < 16 ? b : b >> 4) & 0xF;
}

// block -> out[qk], as gguf.quants.dequantize computes it
inline void dequantize_block(QType t, const uint8_t* blk, float* out) {
  switch (t) {
    case QType::kQ5_0: {
      const float d = f16_at(blk);
      for (int e = 0; e < 32; ++e)
        out[e] = d * float(quant_q5(FASTLM_FIELD(BlockQ5_0, qh), FASTLM_FIELD(BlockQ5_0, qs), e) - 16);
      return;
    }
    case QType::kQ5_1: {
      const float d = f16_at(blk), m = f16_at(FASTLM_FIELD(BlockQ5_1, m));
      for (int e = 0; e < 32; ++e)
        out[e] = d * float(quant_q5(FASTLM_FIELD(BlockQ5_1, qh), FASTLM_FIELD(BlockQ5_1, qs), e)) + m;
      return;
    }
    case QType::kQ2_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ2_K, d)), dmin = f16_at(FASTLM_FIELD(BlockQ2_K, dmin));
      for (int s = 0; s < 16; ++s) {
        const uint8_t sc = FASTLM_FIELD(BlockQ2_K, scales)[s];
        const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
        for (int e = s * 16; e < s * 16 + 16; ++e) out[e] = dl * float(quant_q2_k(blk, e)) - ml;
      }
      return;
    }
    case QType::kQ3_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ3_K, d));
      for (int s = 0; s < 16; ++s) {
        const float dl = d * float(scale_q3_k(FASTLM_FIELD(BlockQ3_K, scales), s));
        for (int e = s * 16; e < s * 16 + 16; ++e) out[e] = dl * float(quant_q3_k(blk, e) - 4);
      }
      return;
    }
    case QType::kQ4_K:
    case QType::kQ5_K: {
      const bool q5 = t == QType::kQ5_K;
      const float d = f16_at(blk), dmin = f16_at(blk + 2);
      for (int s = 0; s < 8; ++s) {
        int sc, m;
        scale_min_k4(blk + 4, s, &sc, &m);
        const float dl = d * float(sc), ml = dmin * float(m);
        for (int e = s * 32; e < s * 32 + 32; ++e)
          out[e] = dl * float(q5 ? quant_q5_k(blk, e) : quant_q4_k(FASTLM_FIELD(BlockQ4_K, qs), e)) - ml;
      }
      return;
    }
    case QType::kQ6_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ6_K, d));
      for (int s = 0; s < 16; ++s) {
        const float dl = d * float(int8_t(FASTLM_FIELD(BlockQ6_K, scales)[s]));
        for (int e = s * 16; e < s * 16 + 16; ++e) out[e] = dl * float(quant_q6_k(blk, e) - 32);
      }
      return;
    }
    case QType::kIQ4_NL: {
      const float d = f16_at(blk);
      const uint8_t* qs = FASTLM_FIELD(BlockIQ4_NL, qs);
      for (int e = 0; e < 32; ++e) out[e] = d * float(kIQ4Values[(e < 16 ? qs[e] : qs[e - 16] >> 4) & 0xF]);
      return;
    }
    case QType::kIQ4_XS: {
      const float d = f16_at(blk);
      for (int s = 0; s < 8; ++s) {
        const float dl = d * float(scale_iq4_xs(blk, s));
        for (int e = s * 32; e < s * 32 + 32; ++e) out[e] = dl * float(kIQ4Values[nibble_iq4_xs(blk, e)]);
      }
      return;
    }
    default: return;
  }
}

// a block's sub-block scales and minimums, natural order: w = sc[s] * q + mn[s]
inline void unpack_scales(QType t, const uint8_t* blk, float* sc, float* mn) {
  switch (t) {
    case QType::kQ5_0:
      sc[0] = f16_at(blk);
      mn[0] = -16.0f * sc[0];
      return;
    case QType::kQ5_1:
      sc[0] = f16_at(blk);
      mn[0] = f16_at(FASTLM_FIELD(BlockQ5_1, m));
      return;
    case QType::kQ2_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ2_K, d)), dmin = f16_at(FASTLM_FIELD(BlockQ2_K, dmin));
      for (int s = 0; s < 16; ++s) {
        const uint8_t b = FASTLM_FIELD(BlockQ2_K, scales)[s];
        sc[s] = d * float(b & 0xF);
        mn[s] = -(dmin * float(b >> 4));
      }
      return;
    }
    case QType::kQ3_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ3_K, d));
      for (int s = 0; s < 16; ++s) {
        sc[s] = d * float(scale_q3_k(FASTLM_FIELD(BlockQ3_K, scales), s));
        mn[s] = -4.0f * sc[s];
      }
      return;
    }
    case QType::kQ4_K:
    case QType::kQ5_K: {
      const float d = f16_at(blk), dmin = f16_at(blk + 2);
      for (int s = 0; s < 8; ++s) {
        int a, m;
        scale_min_k4(blk + 4, s, &a, &m);
        sc[s] = d * float(a);
        mn[s] = -(dmin * float(m));
      }
      return;
    }
    case QType::kQ6_K: {
      const float d = f16_at(FASTLM_FIELD(BlockQ6_K, d));
      for (int s = 0; s < 16; ++s) {
        sc[s] = d * float(int8_t(FASTLM_FIELD(BlockQ6_K, scales)[s]));
        mn[s] = -32.0f * sc[s];
      }
      return;
    }
    case QType::kIQ4_NL:
      sc[0] = f16_at(blk);
      mn[0] = 0.0f;
      return;
    case QType::kIQ4_XS: {
      const float d = f16_at(blk);
      for (int s = 0; s < 8; ++s) {
        sc[s] = d * float(scale_iq4_xs(blk, s));
        mn[s] = 0.0f;
      }
      return;
    }
    default: return;
  }
}

// a row of K elements (K / qk blocks) -> out[K]
inline void dequantize_row(QType t, const uint8_t* row, int64_t K, float* out) {
  const GgmlTypeInfo info = ggml_type_info(t);
  for (int64_t b = 0; b < K / info.qk; ++b) dequantize_block(t, row + b * info.bytes, out + b * info.qk);
}

// block -> q[qk] (uint8, or int8 bits for the signed types) and its unpack_scales
inline void unpack_block(QType t, const uint8_t* blk, uint8_t* q, float* sc, float* mn) {
  unpack_scales(t, blk, sc, mn);
  switch (t) {
    case QType::kQ5_0:
      for (int e = 0; e < 32; ++e) q[e] = uint8_t(quant_q5(FASTLM_FIELD(BlockQ5_0, qh), FASTLM_FIELD(BlockQ5_0, qs), e));
      return;
    case QType::kQ5_1:
      for (int e = 0; e < 32; ++e) q[e] = uint8_t(quant_q5(FASTLM_FIELD(BlockQ5_1, qh), FASTLM_FIELD(BlockQ5_1, qs), e));
      return;
    case QType::kQ2_K:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(quant_q2_k(blk, e));
      return;
    case QType::kQ3_K:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(quant_q3_k(blk, e));
      return;
    case QType::kQ4_K:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(quant_q4_k(FASTLM_FIELD(BlockQ4_K, qs), e));
      return;
    case QType::kQ5_K:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(quant_q5_k(blk, e));
      return;
    case QType::kQ6_K:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(quant_q6_k(blk, e));
      return;
    case QType::kIQ4_NL: {
      const uint8_t* qs = FASTLM_FIELD(BlockIQ4_NL, qs);
      for (int e = 0; e < 32; ++e) q[e] = uint8_t(kIQ4Values[(e < 16 ? qs[e] : qs[e - 16] >> 4) & 0xF]);
      return;
    }
    case QType::kIQ4_XS:
      for (int e = 0; e < 256; ++e) q[e] = uint8_t(kIQ4Values[nibble_iq4_xs(blk, e)]);
      return;
    default: return;
  }
}

#undef FASTLM_FIELD

}  // namespace ggml
}  // namespace fastlm
