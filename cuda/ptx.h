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

// d (64 x 128 fp32 over the warpgroup, 64 per thread) (+)= A (64 x 16) B (128 x 16)^T, bf16, both
// K-major in shared memory behind descriptors; accumulate = false overwrites d
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float d[64], uint64_t a, uint64_t b, bool accumulate) {
#if defined(FASTLM_SIMT)
  simt::wgmma_issue(d, a, b, accumulate);
#elif defined(FASTLM_HAVE_WGMMA)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(int(accumulate)));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();  // built without sm_90a: the host never launches the wgmma kernel then
#endif
}

}  // namespace ptx
}  // namespace fastlm
