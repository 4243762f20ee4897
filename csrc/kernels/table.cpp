#include "kernels/isa.h"

namespace fastlm {
namespace FASTLM_ISA_NS {

const KernelTable& kernel_table() {
  static const KernelTable table = {
      kIsaName,  matmul_pack_nr(), pack_weight,   packed_row, matmul_workspace,      matmul,
      attention, rms_norm,         layer_norm,    quantize_int8,         int8_matmul_workspace,
      int8_matmul, rope,           gelu_tanh,     silu_mul,              softmax,
      add,       q_quantize,       q_dequantize_row, q_matmul,
  };
  return table;
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
