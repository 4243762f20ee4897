// fastlm._C.cuda and fastlm._C.cuda_emulated (see cuda.cpp, cuda_emulated.cpp)
#pragma once

#include <pybind11/pybind11.h>

namespace fastlm {
void register_cuda(pybind11::module_& m);
void register_cuda_emulated(pybind11::module_& m);
}  // namespace fastlm
