// GPU bindings: norms, softmax, element-wise ops, casts, embedding lookups (see gpu_arrays.h).
#include "bindings/gpu_arrays.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

void def_pointwise_kernels(py::module_& m) {
  m.def("rms_norm", [](const py::object& x, const py::object& w, float eps, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols);
    std::vector<View> keep;
    const float* wp = optional_f32(w, "weight", cols, keep);
    void* yp;
    py::object y = output(out, xv.shape, DType::kF32, &yp);
    rms_norm(static_cast<float*>(xv.ptr), wp, static_cast<float*>(yp), rows, cols, eps);
    return y;
  }, "x"_a, "weight"_a, "eps"_a = 1e-6f, py::kw_only(), "out"_a = py::none());
  m.def("layer_norm", [](const py::object& x, const py::object& w, const py::object& b, float eps, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols);
    std::vector<View> keep;
    const float* wp = optional_f32(w, "weight", cols, keep);
    const float* bp = optional_f32(b, "bias", cols, keep);
    void* yp;
    py::object y = output(out, xv.shape, DType::kF32, &yp);
    layer_norm(static_cast<float*>(xv.ptr), wp, bp, static_cast<float*>(yp), rows, cols, eps);
    return y;
  }, "x"_a, "weight"_a, "bias"_a = py::none(), "eps"_a = 1e-5f, py::kw_only(), "out"_a = py::none());
  m.def("softmax", [](const py::object& x, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols);
    void* yp;
    py::object y = output(out, xv.shape, DType::kF32, &yp);
    softmax(static_cast<float*>(xv.ptr), static_cast<float*>(yp), rows, cols);
    return y;
  }, "x"_a, py::kw_only(), "out"_a = py::none());
  auto binary = [&m](const char* name, void (*fn)(const float*, const float*, float*, int64_t)) {
    m.def(name, [fn](const py::object& a, const py::object& b, const py::object& out) {
      need_device();
      View av = typed(a, "a", {DType::kF32}), bv = typed(b, "b", {DType::kF32});
      if (av.shape != bv.shape) throw py::value_error("the operands must have the same shape");
      void* yp;
      py::object y = output(out, av.shape, DType::kF32, &yp);
      fn(static_cast<float*>(av.ptr), static_cast<float*>(bv.ptr), static_cast<float*>(yp), av.size);
      return y;
    }, "a"_a, "b"_a, py::kw_only(), "out"_a = py::none());
  };
  binary("add", &add);
  binary("silu_mul", &silu_mul);
  m.def("gelu_tanh", [](const py::object& x, const py::object& out) {
    need_device();
    View xv = typed(x, "x", {DType::kF32});
    void* yp;
    py::object y = output(out, xv.shape, DType::kF32, &yp);
    gelu_tanh(static_cast<float*>(xv.ptr), static_cast<float*>(yp), xv.size);
    return y;
  }, "x"_a, py::kw_only(), "out"_a = py::none());
  m.def("cast", [](const py::object& x, const std::string& dtype, const py::object& out) {
    need_device();
    View xv = view_of(x, "x");
    const DType to = dtype_from_name(dtype);
    void* yp;
    py::object y = output(out, xv.shape, to, &yp);
    cast(xv.ptr, xv.dtype, yp, to, xv.size);
    return y;
  }, "x"_a, "dtype"_a, py::kw_only(), "out"_a = py::none(), "convert elements (round to nearest; int8 saturates)");
  m.def("embedding", [](const py::object& ids, const py::object& table, const py::object& out) {
    need_device();
    View iv = typed(ids, "ids", {DType::kI32}), tv = typed(table, "table", {DType::kF32, DType::kBF16, DType::kF16});
    if (tv.shape.size() != 2) throw py::value_error("table must be (vocab, hidden)");
    std::vector<int64_t> shape = iv.shape;
    shape.push_back(tv.shape[1]);
    void* yp;
    py::object y = output(out, shape, DType::kF32, &yp);
    int32_t bad = 0;
    Buffer flag = Buffer::upload(&bad, 4);
    embedding(static_cast<int32_t*>(iv.ptr), iv.size, tv.ptr, tv.dtype, tv.shape[0], tv.shape[1],
              static_cast<float*>(yp), static_cast<int32_t*>(flag.get()));
    copy_to_host(&bad, flag.get(), 4);
    if (bad) throw py::value_error("ids out of range [0, " + std::to_string(tv.shape[0]) + ")");
    return y;
  }, "ids"_a, "table"_a, py::kw_only(), "out"_a = py::none(), "rows of table as float32; ValueError for a bad id");
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
