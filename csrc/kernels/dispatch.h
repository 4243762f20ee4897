// the choice of kernel ISA, made once at import: the best the CPU supports (base/cpu.h), or
// FASTLM_ISA=scalar|avx2|avx512 (an impossible choice raises). compiled once, not per ISA.
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace fastlm {

std::vector<std::string> compiled_isas();   // variants in this build
std::vector<std::string> supported_isas();  // compiled and runnable on this CPU, best last
std::string best_isa();

// the active kernel table; set_isa throws std::invalid_argument for an unknown, uncompiled or
// unsupported name
const KernelTable& kernels();
void set_isa(const std::string& name);
std::string current_isa();

}  // namespace fastlm
