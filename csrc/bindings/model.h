#pragma once

#include <pybind11/pybind11.h>

namespace fastlm {
// defines fastlm._C.Model
void register_model(pybind11::module_& m);
}  // namespace fastlm
