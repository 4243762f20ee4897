// fastlm._C.cuda_emulated: the same bindings over the CUDA sources compiled for the host under
// the SIMT emulation (cuda/simt.h), always built: the tests check the kernels' arithmetic with it
// where no GPU is lent. Device memory is host memory; arrays go in through __array_interface__
// (NumPy) or DLPack (torch CPU tensors). It is a checking tool, not a fast path.
#define FASTLM_SIMT 1
#define FASTLM_GPU_NS cuda_emu
#include "bindings/cuda.h"
#include "bindings/gpu_backend.inc"

namespace fastlm {
void register_cuda_emulated(pybind11::module_& m) { cuda_emu::register_backend(m); }
}  // namespace fastlm
