// NumPy argument checks shared by the bindings: each raises TypeError/ValueError naming the
// argument, what it got and what was expected.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace fastlm {
namespace py = pybind11;

std::string shape_str(const py::array& a);
std::string dtype_str(const py::array& a);
bool is_bf16(const py::array& a);
bool has_dt(const py::array& a, DType t);
// the array behind `obj`, checked: a NumPy array of one of `dts`, C-contiguous, non-empty, with a
// rank in [min_ndim, max_ndim]
py::array checked(const py::object& obj, const char* name, std::initializer_list<DType> dts, int min_ndim,
                  int max_ndim);
bool overlaps(const py::array& a, const py::array& b);
// `out` if given (checked: float32, C-contiguous, writeable, the expected shape), else a new array
py::array_t<float> make_out(const py::object& out, const std::vector<py::ssize_t>& shape);
void no_alias(const py::array& out, const py::array& in, const char* name);  // no overlap at all
// element-wise and row ops: out may be `in` itself, but not overlap it partly
void same_or_apart(const py::array& out, const py::array& in, const char* name);
std::vector<py::ssize_t> shape_of(const py::array& a);
const float* cf32(const py::array& a);
// a per-thread scratch buffer, 64-byte aligned, that only grows
void* workspace(size_t bytes);
// a float32 (n,) array, or null for None; `keep` holds the array alive
// the quantized weight kind named by a string: "q8" or "q4"
QType qtype_of(const std::string& name);
// a (N, q_row_bytes) uint8 array of quantized records for a (N, K) weight in groups of G, checked
QWeight qweight_of(const py::object& obj, const std::string& qtype, int64_t K, int64_t G, py::array& keep);
const float* optional_vec(const py::object& obj, const char* name, py::ssize_t n, py::array& keep);

}  // namespace fastlm
