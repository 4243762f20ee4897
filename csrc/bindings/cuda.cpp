// fastlm._C.cuda: the CUDA kernels on device arrays (the gpu_*.cpp bindings, compiled for
// fastlm::cuda), or, in a build without a CUDA toolkit, a module that only says so.
#include "bindings/cuda.h"

#include <string>

#if defined(FASTLM_WITH_CUDA)
#include "bindings/gpu_arrays.h"
#endif

namespace fastlm {

void register_cuda(pybind11::module_& m) {
#if defined(FASTLM_WITH_CUDA)
  cuda::register_backend(m);
#else
  m.attr("built") = false;
  m.attr("emulated") = false;
  m.def("device_count", [] { return 0; });
  m.def("available", [] { return false; });
  m.def("unavailable_reason", [] { return std::string("this fastlm was built without CUDA"); });
#endif
}

}  // namespace fastlm
