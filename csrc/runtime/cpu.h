// CPU features (cpuid + the OS's xgetbv) and the choice of kernel ISA, made once at import:
// the best the CPU supports, or FASTLM_ISA=scalar|avx2|avx512 (an impossible choice raises).
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

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

std::vector<std::string> compiled_isas();   // variants in this build
std::vector<std::string> supported_isas();  // compiled and runnable on this CPU, best last
std::string best_isa();

// the active kernel table; set_isa throws std::invalid_argument for an unknown, uncompiled or
// unsupported name
const KernelTable& kernels();
void set_isa(const std::string& name);
std::string current_isa();

}  // namespace fastlm
