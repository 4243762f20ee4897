#include "base/cpu.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define FASTLM_X86 1
#endif

namespace fastlm {
namespace {

#if defined(FASTLM_X86)
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) { __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]); }

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(FASTLM_X86)
  unsigned r[4];
  cpuid(0, 0, r);
  unsigned max_leaf = r[0];
  char vendor[13] = {};
  std::memcpy(vendor, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  f.vendor = vendor;
  cpuid(0x80000000u, 0, r);
  if (r[0] >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    f.brand = brand;
    size_t b = f.brand.find_first_not_of(' ');
    f.brand = b == std::string::npos ? "" : f.brand.substr(b);
  }
  cpuid(1, 0, r);
  const bool osxsave = (r[2] >> 27) & 1;
  const bool fma = (r[2] >> 12) & 1, f16c = (r[2] >> 29) & 1, avx = (r[2] >> 28) & 1;
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // xmm + ymm state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask + zmm state
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;    // tile config + tile data
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    f.avx2 = avx && os_avx && ((r[1] >> 5) & 1);
    f.fma = os_avx && fma;
    f.f16c = os_avx && f16c;
    f.avx512f = os_avx512 && ((r[1] >> 16) & 1);
    f.avx512dq = os_avx512 && ((r[1] >> 17) & 1);
    f.avx512bw = os_avx512 && ((r[1] >> 30) & 1);
    f.avx512vl = os_avx512 && ((r[1] >> 31) & 1);
    f.avx512vnni = os_avx512 && ((r[2] >> 11) & 1);
    f.amx_bf16 = os_amx && ((r[3] >> 22) & 1);
    f.amx_tile = os_amx && ((r[3] >> 24) & 1);
    f.amx_int8 = os_amx && ((r[3] >> 25) & 1);
    cpuid(7, 1, r);
    f.avx_vnni = os_avx && ((r[0] >> 4) & 1);
    f.avx512bf16 = os_avx512 && ((r[0] >> 5) & 1);
  }
#elif defined(__aarch64__)
  f.neon = true;
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<std::string> cpu_feature_names() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> out;
  auto add = [&](bool present, const char* name) { if (present) out.push_back(name); };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx_vnni, "avx_vnni");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vnni, "avx512_vnni");
  add(f.avx512bf16, "avx512_bf16");
  add(f.amx_tile, "amx_tile");
  add(f.amx_int8, "amx_int8");
  add(f.amx_bf16, "amx_bf16");
  add(f.neon, "neon");
  return out;
}

}  // namespace fastlm
