// The warp-level instructions the tensor-core kernels use (sm_80+), as inline PTX on the GPU and
// through the SIMT emulation (simt.h) on the host, so one kernel source serves both.
#pragma once

#include <cstdint>

namespace fastlm {
namespace ptx {

// 16 bytes global -> shared, asynchronous; only src_bytes (0 or 16) are read, the rest zero-filled
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if defined(FASTLM_SIMT)
  simt::cp_async(smem, gmem, 16, valid ? 16 : 0);
#else
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(FASTLM_SIMT)
  simt::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// wait until at most `pending` committed groups are still in flight
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(FASTLM_SIMT)
  simt::cp_async_wait(pending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

// four 8x8 b16 matrices from shared memory; lane 8i + r names row r of matrix i
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem) {
#if defined(FASTLM_SIMT)
  simt::ldmatrix(r, 4, smem, false);
#else
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem) {
#if defined(FASTLM_SIMT)
  simt::ldmatrix(r, 4, smem, true);
#else
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#endif
}

// d = a (16x16 bf16, row) * b (16x8 bf16, col) + d, fp32 accumulate
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(FASTLM_SIMT)
  simt::mma(d, a, b, d, [](uint32_t r, int i) { return simt::bf16_to_float(uint16_t(r >> (16 * i))); }, 16);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ void mma_f16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(FASTLM_SIMT)
  simt::mma(d, a, b, d, [](uint32_t r, int i) { return simt::f16_to_float(uint16_t(r >> (16 * i))); }, 16);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// d = a (16x32 s8, row) * b (32x8 s8, col) + d, s32 accumulate
__device__ __forceinline__ void mma_s8(int d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(FASTLM_SIMT)
  simt::mma(d, a, b, d, [](uint32_t r, int i) { return int(int8_t(uint8_t(r >> (8 * i)))); }, 32);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

}  // namespace ptx
}  // namespace fastlm
