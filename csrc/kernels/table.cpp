#include "kernels/isa.h"

namespace fastlm {
namespace FASTLM_ISA_NS {

const KernelTable& kernel_table() {
  static const KernelTable table = FASTLM_KERNEL_TABLE(kIsaName, matmul_pack_nr());
  return table;
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
