// thin SIMD layer: one vector float type VF of kW lanes and one int32 vector VI, per ISA.
// every kernel file is compiled once per ISA (see CMakeLists.txt) and only talks to this layer,
// so an algorithm is written once and the width follows the ISA.
//
//   FASTLM_ISA_AVX512: 16 lanes, AVX-512 F/BW/VL/DQ + VNNI (vpdpbusd)
//   FASTLM_ISA_AVX2:    8 lanes, AVX2 + FMA (int8 dot via vpmaddubsw + vpmaddwd)
//   FASTLM_ISA_SCALAR:  8 lanes of plain C++ (GCC/Clang vector extension), the portable baseline
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(FASTLM_EMULATE_ISA)
// tests only (tests/native): the intrinsics come from SIMDe, so a CPU without AVX-512 can run
// this ISA's code paths, slowly, and check them against the references
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#elif defined(FASTLM_ISA_AVX512) || defined(FASTLM_ISA_AVX2)
#include <immintrin.h>
#endif

#define FASTLM_INLINE inline __attribute__((always_inline))

namespace fastlm {
namespace FASTLM_ISA_NS {

#if defined(FASTLM_ISA_AVX512)

constexpr int kW = 16;
constexpr const char* kIsaName = "avx512";
using VF = __m512;
using VI = __m512i;

FASTLM_INLINE __mmask16 tail_mask(int n) { return (__mmask16)((1u << n) - 1u); }
FASTLM_INLINE VF vzero() { return _mm512_setzero_ps(); }
FASTLM_INLINE VF vset1(float x) { return _mm512_set1_ps(x); }
FASTLM_INLINE VF vload(const float* p) { return _mm512_loadu_ps(p); }
FASTLM_INLINE void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
#if defined(FASTLM_EMULATE_ISA)
// SIMDe emulates masked loads/stores with full-width accesses (a store is a read-modify-write of
// all 64 bytes, which races with the thread writing the next row): go through a buffer instead
FASTLM_INLINE VF vload_part(const float* p, int n) {
  alignas(64) float t[16] = {};
  std::memcpy(t, p, sizeof(float) * n);
  return _mm512_load_ps(t);
}
FASTLM_INLINE void vstore_part(float* p, VF v, int n) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  std::memcpy(p, t, sizeof(float) * n);
}
#else
FASTLM_INLINE VF vload_part(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
FASTLM_INLINE void vstore_part(float* p, VF v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
#endif
FASTLM_INLINE VF bf16_widen(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FASTLM_INLINE VF vload(const uint16_t* p) {  // bfloat16 -> float32: the high half of the word
  return bf16_widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
FASTLM_INLINE VF vload_part(const uint16_t* p, int n) {
#if defined(FASTLM_EMULATE_ISA)
  alignas(32) uint16_t t[16] = {};
  std::memcpy(t, p, sizeof(uint16_t) * n);
  return bf16_widen(_mm256_load_si256(reinterpret_cast<const __m256i*>(t)));
#else
  return bf16_widen(_mm256_maskz_loadu_epi16(tail_mask(n), p));
#endif
}
// 2*kW bf16 in "pair order" (bf16_pair_pos) -> elements [0, kW) in lo, [kW, 2kW) in hi:
// one load and two unpacks against zero instead of two widening loads and two shifts
FASTLM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) {
  __m512i v = _mm512_loadu_si512(p), z = _mm512_setzero_si512();
  lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, v));
  hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, v));
}
FASTLM_INLINE VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
FASTLM_INLINE VF vzero_where_below(VF r, VF x, VF lo) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), r); }
// 1/a: 14-bit estimate + one Newton step (~23 bits)
FASTLM_INLINE VF vrcp(VF a) {
  VF r = _mm512_rcp14_ps(a);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0f)));
}
FASTLM_INLINE VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
FASTLM_INLINE VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
FASTLM_INLINE VF vdiv(VF a, VF b) { return _mm512_div_ps(a, b); }
FASTLM_INLINE VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
FASTLM_INLINE VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
FASTLM_INLINE VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }  // a*b + c
FASTLM_INLINE VF vabs(VF a) { return _mm512_abs_ps(a); }
FASTLM_INLINE VF vround(VF a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// horizontal reductions by halves (the _mm512_reduce_* helpers are sequences of these anyway)
FASTLM_INLINE __m128 hsum256(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_add_ss(s, _mm_movehdup_ps(s));
}
FASTLM_INLINE float vsum(VF a) {
  return _mm_cvtss_f32(hsum256(_mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1))));
}
FASTLM_INLINE float vhmax(VF a) {
  __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
// 2^n for integral n in [-126, 127]
FASTLM_INLINE VF vpow2i(VF n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}

// int8: a VI holds kW int32 lanes, each lane 4 consecutive int8 along K
FASTLM_INLINE VI vizero() { return _mm512_setzero_si512(); }
FASTLM_INLINE VI viload(const int8_t* p) { return _mm512_loadu_si512(p); }
FASTLM_INLINE VI vibcast4(const int8_t* p) { int32_t v; std::memcpy(&v, p, 4); return _mm512_set1_epi32(v); }
// acc += sum over each lane's 4 byte pairs of a*b, both signed int8 in [-127, 127]
FASTLM_INLINE VI vdot4(VI acc, VI a, VI b) {
  __mmask64 neg = _mm512_movepi8_mask(a);
  VI b_signed = _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b);
  return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(a), b_signed);
}
FASTLM_INLINE VF vcvt(VI a) { return _mm512_cvtepi32_ps(a); }
FASTLM_INLINE int32_t visum(VI a) {
  __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
// round to nearest even, then to int32 (matches std::nearbyint under the default rounding mode)
FASTLM_INLINE VI vcvt_round(VF a) { return _mm512_cvtps_epi32(a); }
// kW int32 values in [-127, 127] -> kW int8 stored at p
FASTLM_INLINE void vstore_i8(int8_t* p, VI a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtsepi32_epi8(a)); }

#elif defined(FASTLM_ISA_AVX2)

constexpr int kW = 8;
constexpr const char* kIsaName = "avx2";
using VF = __m256;
using VI = __m256i;

FASTLM_INLINE __m256i tail_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
FASTLM_INLINE VF vzero() { return _mm256_setzero_ps(); }
FASTLM_INLINE VF vset1(float x) { return _mm256_set1_ps(x); }
FASTLM_INLINE VF vload(const float* p) { return _mm256_loadu_ps(p); }
FASTLM_INLINE void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
FASTLM_INLINE VF vload_part(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
FASTLM_INLINE void vstore_part(float* p, VF v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
FASTLM_INLINE VF bf16_widen(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
FASTLM_INLINE VF vload(const uint16_t* p) {  // bfloat16 -> float32: the high half of the word
  return bf16_widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
FASTLM_INLINE VF vload_part(const uint16_t* p, int n) {
  alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(tmp, p, sizeof(uint16_t) * n);
  return bf16_widen(_mm_load_si128(reinterpret_cast<const __m128i*>(tmp)));
}
FASTLM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) {
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), z = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v));
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v));
}
FASTLM_INLINE VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
FASTLM_INLINE VF vzero_where_below(VF r, VF x, VF lo) { return _mm256_and_ps(r, _mm256_cmp_ps(x, lo, _CMP_GE_OQ)); }
// 1/a: 12-bit estimate + one Newton step (~23 bits)
FASTLM_INLINE VF vrcp(VF a) {
  VF r = _mm256_rcp_ps(a);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(2.0f)));
}
FASTLM_INLINE VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
FASTLM_INLINE VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
FASTLM_INLINE VF vdiv(VF a, VF b) { return _mm256_div_ps(a, b); }
FASTLM_INLINE VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
FASTLM_INLINE VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
FASTLM_INLINE VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }  // a*b + c
FASTLM_INLINE VF vabs(VF a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
FASTLM_INLINE VF vround(VF a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
FASTLM_INLINE float vsum(VF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
FASTLM_INLINE float vhmax(VF a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
FASTLM_INLINE VF vpow2i(VF n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}

FASTLM_INLINE VI vizero() { return _mm256_setzero_si256(); }
FASTLM_INLINE VI viload(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
FASTLM_INLINE VI vibcast4(const int8_t* p) { int32_t v; std::memcpy(&v, p, 4); return _mm256_set1_epi32(v); }
// acc += sum over each lane's 4 byte pairs of a*b, both signed int8 in [-127, 127].
// vpmaddubsw wants unsigned x signed: move a's sign onto b; |a|*|b| pairs sum to at most
// 2*127*127 = 32258, so the int16 step never saturates.
FASTLM_INLINE VI vdot4(VI acc, VI a, VI b) {
  __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}
FASTLM_INLINE VF vcvt(VI a) { return _mm256_cvtepi32_ps(a); }
FASTLM_INLINE int32_t visum(VI a) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
FASTLM_INLINE VI vcvt_round(VF a) { return _mm256_cvtps_epi32(a); }
FASTLM_INLINE void vstore_i8(int8_t* p, VI a) {
  __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  __m128i w8 = _mm_packs_epi16(w16, w16);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), w8);
}

#else  // FASTLM_ISA_SCALAR: plain C++ on 8 lanes; the compiler maps it to the baseline ISA

constexpr int kW = 8;
constexpr const char* kIsaName = "scalar";
typedef float VF __attribute__((vector_size(32)));
typedef int32_t VI __attribute__((vector_size(32)));

FASTLM_INLINE VF vzero() { return VF{}; }
FASTLM_INLINE VF vset1(float x) { return VF{} + x; }
FASTLM_INLINE VF vload(const float* p) { VF v; std::memcpy(&v, p, sizeof(v)); return v; }
FASTLM_INLINE void vstore(float* p, VF v) { std::memcpy(p, &v, sizeof(v)); }
FASTLM_INLINE VF vload_part(const float* p, int n) { VF v{}; for (int i = 0; i < n; ++i) v[i] = p[i]; return v; }
FASTLM_INLINE void vstore_part(float* p, VF v, int n) { for (int i = 0; i < n; ++i) p[i] = v[i]; }
FASTLM_INLINE float bf16_to_f32(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }
FASTLM_INLINE VF vload(const uint16_t* p) { VF v; for (int i = 0; i < kW; ++i) v[i] = bf16_to_f32(p[i]); return v; }
FASTLM_INLINE VF vload_part(const uint16_t* p, int n) { VF v{}; for (int i = 0; i < n; ++i) v[i] = bf16_to_f32(p[i]); return v; }
FASTLM_INLINE void vload_bf16x2(const uint16_t* p, VF& lo, VF& hi) { lo = vload(p); hi = vload(p + kW); }
FASTLM_INLINE VF vadd(VF a, VF b) { return a + b; }
FASTLM_INLINE VF vzero_where_below(VF r, VF x, VF lo) { return x >= lo ? r : VF{}; }
FASTLM_INLINE VF vrcp(VF a) { return 1.0f / a; }
FASTLM_INLINE VF vsub(VF a, VF b) { return a - b; }
FASTLM_INLINE VF vmul(VF a, VF b) { return a * b; }
FASTLM_INLINE VF vdiv(VF a, VF b) { return a / b; }
FASTLM_INLINE VF vmax(VF a, VF b) { return a > b ? a : b; }
FASTLM_INLINE VF vmin(VF a, VF b) { return a < b ? a : b; }
FASTLM_INLINE VF vfma(VF a, VF b, VF c) { return a * b + c; }
FASTLM_INLINE VF vabs(VF a) { return a < 0 ? -a : a; }
FASTLM_INLINE VF vround(VF a) { VF r; for (int i = 0; i < kW; ++i) r[i] = std::nearbyint(a[i]); return r; }
FASTLM_INLINE float vsum(VF a) {  // pairwise, in the same order as the AVX2 reduction
  float s0 = (a[0] + a[4]) + (a[2] + a[6]);
  float s1 = (a[1] + a[5]) + (a[3] + a[7]);
  return s0 + s1;
}
FASTLM_INLINE float vhmax(VF a) { float m = a[0]; for (int i = 1; i < kW; ++i) m = a[i] > m ? a[i] : m; return m; }
FASTLM_INLINE VF vpow2i(VF n) { VF r; for (int i = 0; i < kW; ++i) r[i] = std::ldexp(1.0f, int(n[i])); return r; }

FASTLM_INLINE VI vizero() { return VI{}; }
FASTLM_INLINE VI viload(const int8_t* p) { VI v; std::memcpy(&v, p, sizeof(v)); return v; }
FASTLM_INLINE VI vibcast4(const int8_t* p) { int32_t v; std::memcpy(&v, p, 4); return VI{} + v; }
FASTLM_INLINE VI vdot4(VI acc, VI a, VI b) {
  for (int i = 0; i < kW; ++i) {
    int8_t av[4], bv[4];
    std::memcpy(av, reinterpret_cast<const char*>(&a) + 4 * i, 4);
    std::memcpy(bv, reinterpret_cast<const char*>(&b) + 4 * i, 4);
    acc[i] += int32_t(av[0]) * bv[0] + int32_t(av[1]) * bv[1] + int32_t(av[2]) * bv[2] + int32_t(av[3]) * bv[3];
  }
  return acc;
}
FASTLM_INLINE VF vcvt(VI a) { VF r; for (int i = 0; i < kW; ++i) r[i] = float(a[i]); return r; }
FASTLM_INLINE int32_t visum(VI a) { int32_t s = 0; for (int i = 0; i < kW; ++i) s += a[i]; return s; }
FASTLM_INLINE VI vcvt_round(VF a) { VI r; for (int i = 0; i < kW; ++i) r[i] = int32_t(std::nearbyint(a[i])); return r; }
FASTLM_INLINE void vstore_i8(int8_t* p, VI a) { for (int i = 0; i < kW; ++i) p[i] = int8_t(a[i]); }

#endif

// pins a vector in a register: without it GCC folds a reused load into each FMA's memory
// operand, tripling the loads of the GEMM micro-kernel (load-bound at ~2/3 of the FMA peak)
#if (defined(FASTLM_ISA_AVX2) || defined(FASTLM_ISA_AVX512)) && !defined(FASTLM_EMULATE_ISA)
#define FASTLM_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define FASTLM_IN_REGISTER(v) ((void)0)
#endif

// ---- built on the primitives above: the same code for every ISA ----

// where element e (< 2 kW) of a bf16 pair block is stored so that vload_bf16x2 returns it in
// order: the unpacks work within 128-bit lanes, 4 words per lane from each half
FASTLM_INLINE constexpr int bf16_pair_pos(int e) {
#if defined(FASTLM_ISA_SCALAR)
  return e;
#else
  return ((e % kW) / 4) * 8 + (e / kW) * 4 + e % 4;
#endif
}

// loads a partial vector of either weight type
template <typename T>
FASTLM_INLINE VF vload_n(const T* p, int n) { return n == kW ? vload(p) : vload_part(p, n); }

// e^x, Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial; relative error ~2 ulp.
// inputs below -87.3 give 0 (denormals flushed), above 88.3 give +inf.
FASTLM_INLINE VF vexp(VF x) {
  const VF hi = vset1(88.3762626647949f), lo = vset1(-87.3365447504f);
  VF xc = vmin(vmax(x, lo), hi);
  VF n = vround(vmul(xc, vset1(1.44269504088896341f)));
  VF r = vfma(n, vset1(-0.693359375f), xc);  // ln2 split in two for exactness
  r = vfma(n, vset1(2.12194440e-4f), r);
  VF p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
  // below the clamp the true value underflows: exactly 0 (keeps masked softmax exact)
  return vzero_where_below(vmul(p, vpow2i(n)), x, lo);
}

// 1 / (1 + e^-x): no cancellation at either end
FASTLM_INLINE VF vsigmoid(VF x) { return vrcp(vadd(vset1(1.0f), vexp(vsub(vzero(), x)))); }

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
