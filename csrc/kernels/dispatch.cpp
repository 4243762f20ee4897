#include "kernels/dispatch.h"

#include <atomic>
#include <stdexcept>

#include "base/cpu.h"

namespace fastlm {
namespace {

struct IsaEntry {
  const char* name;
  const KernelTable* (*table)();
  bool (*supported)(const CpuFeatures&);
};

const std::vector<IsaEntry>& isa_entries() {  // from worst to best
  static const std::vector<IsaEntry> entries = {
      {"scalar", [] { return &scalar::kernel_table(); }, [](const CpuFeatures&) { return true; }},
#if defined(FASTLM_HAVE_AVX2)
      {"avx2", [] { return &avx2::kernel_table(); },
       [](const CpuFeatures& f) { return f.avx2 && f.fma && f.f16c; }},
#endif
#if defined(FASTLM_HAVE_AVX512)
      {"avx512", [] { return &avx512::kernel_table(); },
       [](const CpuFeatures& f) {
         return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.fma && f.f16c;
       }},
#endif
  };
  return entries;
}

std::atomic<const KernelTable*> g_table{nullptr};

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> out;
  for (const auto& e : isa_entries()) out.push_back(e.name);
  return out;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const auto& e : isa_entries())
    if (e.supported(cpu_features())) out.push_back(e.name);
  return out;
}

std::string best_isa() { return supported_isas().back(); }

void set_isa(const std::string& name) {
  for (const auto& e : isa_entries()) {
    if (name != e.name) continue;
    if (!e.supported(cpu_features()))
      throw std::invalid_argument("ISA '" + name + "' is compiled in but this CPU does not support it");
    g_table.store(e.table());
    return;
  }
  std::string known;
  for (const auto& e : isa_entries()) known += std::string(known.empty() ? "" : ", ") + e.name;
  throw std::invalid_argument("unknown ISA '" + name + "': this build has " + known);
}

const KernelTable& kernels() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    set_isa(best_isa());
    t = g_table.load();
  }
  return *t;
}

std::string current_isa() { return kernels().name; }

}  // namespace fastlm
