// CPU features: cpuid + the OS's xgetbv on x86-64, read once. kernels/dispatch.h chooses the
// kernel ISA from them.
#pragma once

#include <string>
#include <vector>

namespace fastlm {

struct CpuFeatures {
  std::string vendor, brand;
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avx_vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool neon = false;
};

const CpuFeatures& cpu_features();
std::vector<std::string> cpu_feature_names();  // the ones present

}  // namespace fastlm
