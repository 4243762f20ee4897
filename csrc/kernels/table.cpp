#include "kernels/isa.h"

namespace fastlm {
namespace FASTLM_ISA_NS {

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t{};
    t.name = kIsaName;
    t.pack_nr = matmul_pack_nr();
#define FASTLM_FILL(op, ret, params) t.op = op;
    FASTLM_KERNEL_OPS(FASTLM_FILL)
#undef FASTLM_FILL
    return t;
  }();
  return table;
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
