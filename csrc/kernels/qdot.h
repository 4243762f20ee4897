// what the quantized dot-product kernels share (qmatmul.cpp: fastlm's q8 / q4 records,
// qmatmul_ggml.cpp: the GGUF block types): activations quantized to int8 in blocks of 32, row
// prefetching, and the 256-bit reductions of block sums. included only by those kernel files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/simd.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

// x (M, K) -> int8 q (M, kp) in blocks of 32 (zero past K), per block d = max|x| / 127 and
// dsum = d * (sum of its quants), both (M, kp / 32). with d16 / s16 (each (M, 2 kp / 32)), per
// 128 elements in the order the 16-element sub-block kernels reduce them (the low halves of
// blocks 0..3, then their high halves): the block's d and d * (sum of the half's quants)
inline void quantize_blocks32(const float* x, int64_t M, int64_t K, int64_t kp, int8_t* q, float* d, float* dsum,
                              float* d16 = nullptr, float* s16 = nullptr) {
  const int64_t nb = kp / 32;
  std::fill(q, q + M * kp, int8_t(0));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k0 = b * 32, k1 = std::min(K, k0 + 32);
      float amax = 0.0f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(xr[k]));
      const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      int sum[2] = {0, 0};
      int8_t* out = q + m * kp;
      for (int64_t k = k0; k < k1; ++k) {
        const int v = int(std::nearbyint(std::min(127.0f, std::max(-127.0f, xr[k] * inv))));
        out[k] = int8_t(v);
        sum[(k - k0) / 16] += v;
      }
      d[m * nb + b] = s;
      dsum[m * nb + b] = s * float(sum[0] + sum[1]);
      if (d16) {
        const int64_t at = m * nb * 2 + (b / 4) * 8 + b % 4;
        d16[at] = d16[at + 4] = s;
        s16[at] = s * float(sum[0]);
        s16[at + 4] = s * float(sum[1]);
      }
    }
  }
}

// the records `rows` rows of rb bytes about kPrefetchBytes ahead, every cache line of them: a
// thread's rows are one short stream that the hardware prefetcher picks up too late to hide DRAM
// latency (q4 layers of SmolLM2 went from ~10 to ~17 GB/s with it). left: rows still to come
constexpr int64_t kPrefetchBytes = 3072;
FASTLM_INLINE void prefetch_ahead(const uint8_t* rec, int64_t rb, int64_t left, int rows) {
  const int64_t ahead = (kPrefetchBytes + rb - 1) / rb;
  if (left <= ahead + rows - 1) return;
  const uint8_t* p = rec + ahead * rb;
  for (int64_t off = 0; off < rows * rb; off += 64) __builtin_prefetch(p + off);
}

#if defined(__AVX2__)
// the sums of 8 blocks' int32 vectors, in order, in two steps: hadd4 folds 4 blocks into partial
// sums per 128-bit lane, combine8 adds the lanes of two such results into one vector of 8 sums
FASTLM_INLINE __m256i hadd4(__m256i a, __m256i b, __m256i c, __m256i d) {
  return _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
}

FASTLM_INLINE __m256i combine8(__m256i lo4, __m256i hi4) {
  return _mm256_add_epi32(_mm256_permute2x128_si256(lo4, hi4, 0x20), _mm256_permute2x128_si256(lo4, hi4, 0x31));
}

// 256-bit sums: simd.h's vsum takes the ISA's own vector (512 bits in the AVX-512 copy, which
// runs these AVX2 dot products too)
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
#endif

}  // namespace
}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
