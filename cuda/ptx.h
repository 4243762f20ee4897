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
  simt::mma(d, a, b, d, [](uint32_t r, int i) { return simt::half_to_float(uint16_t(r >> (16 * i))); }, 16);
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

// ---- Hopper (sm_90a): warpgroup MMA ----

#if defined(FASTLM_SIMT) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FASTLM_HAVE_WGMMA 1
#endif

__device__ __forceinline__ uint32_t shared_address(const void* p) {
#if defined(FASTLM_SIMT)
  return simt::shared_address(p);
#else
  return unsigned(__cvta_generic_to_shared(p));
#endif
}

// the descriptor of a K-major bf16 operand in shared memory with the 128-byte swizzle: rows of
// 128 bytes, 8-row atoms 1024 bytes apart (the stride byte offset), the atom 1024-byte aligned
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* smem) {
  return uint64_t((shared_address(smem) & 0x3FFFF) >> 4) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// shared memory written through the generic proxy (stores, cp.async) before the tensor cores read it
__device__ __forceinline__ void fence_proxy_async() {
#if defined(FASTLM_HAVE_WGMMA) && !defined(FASTLM_SIMT)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_fence() {
#if defined(FASTLM_HAVE_WGMMA) && !defined(FASTLM_SIMT)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if defined(FASTLM_SIMT)
  simt::wgmma_commit();
#elif defined(FASTLM_HAVE_WGMMA)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int pending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(FASTLM_SIMT)
  simt::wgmma_wait(pending);
#elif defined(FASTLM_HAVE_WGMMA)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory");
#endif
}

// the 64 accumulator operands of an m64n128 wgmma, as asm operands %0 .. %63 with constraint C
#define FASTLM_WGMMA_ACC(C)                                                                             \
  C(d[0]), C(d[1]), C(d[2]), C(d[3]), C(d[4]), C(d[5]), C(d[6]), C(d[7]), C(d[8]), C(d[9]), C(d[10]),     \
      C(d[11]), C(d[12]), C(d[13]), C(d[14]), C(d[15]), C(d[16]), C(d[17]), C(d[18]), C(d[19]), C(d[20]), \
      C(d[21]), C(d[22]), C(d[23]), C(d[24]), C(d[25]), C(d[26]), C(d[27]), C(d[28]), C(d[29]), C(d[30]), \
      C(d[31]), C(d[32]), C(d[33]), C(d[34]), C(d[35]), C(d[36]), C(d[37]), C(d[38]), C(d[39]), C(d[40]), \
      C(d[41]), C(d[42]), C(d[43]), C(d[44]), C(d[45]), C(d[46]), C(d[47]), C(d[48]), C(d[49]), C(d[50]), \
      C(d[51]), C(d[52]), C(d[53]), C(d[54]), C(d[55]), C(d[56]), C(d[57]), C(d[58]), C(d[59]), C(d[60]), \
      C(d[61]), C(d[62]), C(d[63])
#define FASTLM_WGMMA_D                                                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                           \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                   \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                   \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define FASTLM_ASM_F32(x) "+f"(x)
#define FASTLM_ASM_S32(x) "+r"(x)

// d (64 x 128 fp32 over the warpgroup, 64 per thread) (+)= A (64 x 16) B (128 x 16)^T, bf16, both
// K-major in shared memory behind descriptors; accumulate = false overwrites d
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float d[64], uint64_t a, uint64_t b, bool accumulate) {
#if defined(FASTLM_SIMT)
  simt::wgmma_issue(d, a, b, accumulate, false);
#elif defined(FASTLM_HAVE_WGMMA)
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FASTLM_WGMMA_D ", %64, %65, p, 1, 1, 0, 0;\n}\n"
               : FASTLM_WGMMA_ACC(FASTLM_ASM_F32)
               : "l"(a), "l"(b), "r"(int(accumulate)));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();  // built without sm_90a: the host never launches the wgmma kernel then
#endif
}

// the same for int8: d (64 x 128 int32) (+)= A (64 x 32 s8) B (128 x 32 s8)^T, both K-major (the
// only layout integer wgmma takes), 32 bytes of K per row as for bf16
__device__ __forceinline__ void wgmma_m64n128k32_s8(int d[64], uint64_t a, uint64_t b, bool accumulate) {
#if defined(FASTLM_SIMT)
  simt::wgmma_issue(d, a, b, accumulate, true);
#elif defined(FASTLM_HAVE_WGMMA)
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " FASTLM_WGMMA_D ", %64, %65, p;\n}\n"
               : FASTLM_WGMMA_ACC(FASTLM_ASM_S32)
               : "l"(a), "l"(b), "r"(int(accumulate)));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

}  // namespace ptx
}  // namespace fastlm
