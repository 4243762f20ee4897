// fastlm._C.cuda (see cuda.cpp)
#pragma once

#include <pybind11/pybind11.h>

namespace fastlm {
void register_cuda(pybind11::module_& m);
}
