// fastlm._C.cuda: the CUDA kernels on device arrays. Inputs are any objects exposing
// __cuda_array_interface__ (torch CUDA tensors, CuPy arrays, DeviceArray); outputs are written to
// `out` or to a new DeviceArray, which torch / CuPy take without a copy (torch.as_tensor(a,
// device="cuda")). Built without a CUDA toolkit, the module only says so.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/cuda.h"

#if defined(FASTLM_WITH_CUDA)
#include "cuda/kernels.h"
#endif

namespace py = pybind11;
using namespace pybind11::literals;

namespace fastlm {
namespace {

#if defined(FASTLM_WITH_CUDA)

// float32 memory on the device, owned
class DeviceArray {
 public:
  explicit DeviceArray(std::vector<int64_t> shape) : shape_(std::move(shape)) {
    size_t n = 1;
    for (int64_t d : shape_) n *= size_t(d);
    size_ = n;
    ptr_ = cuda::device_alloc(n * sizeof(float));
  }
  ~DeviceArray() { cuda::device_free(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  float* data() const { return static_cast<float*>(ptr_); }
  size_t size() const { return size_; }
  const std::vector<int64_t>& shape() const { return shape_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
  std::vector<int64_t> shape_;
};

void need_device() {
  if (cuda::device_count() == 0) throw std::runtime_error("no CUDA device is visible (fastlm.kernels.cuda.available() is False)");
}

struct View {
  float* ptr;
  std::vector<int64_t> shape;
  int64_t size;
};

// a float32, C-contiguous device array behind obj's __cuda_array_interface__
View view_of(const py::object& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(std::string(name) + " must be a CUDA array (an object with __cuda_array_interface__: a torch "
                         "CUDA tensor, a CuPy array, a fastlm DeviceArray), got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::dict cai = obj.attr("__cuda_array_interface__");
  const std::string typestr = cai["typestr"].cast<std::string>();
  if (typestr != "<f4") throw py::type_error(std::string(name) + " must be float32, got typestr " + typestr);
  View v;
  v.shape = cai["shape"].cast<std::vector<int64_t>>();
  v.size = 1;
  for (int64_t d : v.shape) v.size *= d;
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    auto strides = cai["strides"].cast<std::vector<int64_t>>();
    int64_t want = 4;
    for (size_t i = v.shape.size(); i-- > 0;) {
      if (v.shape[i] > 1 && strides[i] != want)
        throw py::value_error(std::string(name) + " must be C-contiguous (make it .contiguous())");
      want *= v.shape[i];
    }
  }
  auto data = cai["data"].cast<py::tuple>();
  v.ptr = reinterpret_cast<float*>(data[0].cast<uintptr_t>());
  if (v.size == 0) throw py::value_error(std::string(name) + " must not be empty");
  return v;
}

py::object output(const py::object& out, const std::vector<int64_t>& shape, float** ptr) {
  if (out.is_none()) {
    auto a = std::make_shared<DeviceArray>(shape);
    *ptr = a->data();
    return py::cast(a);
  }
  View v = view_of(out, "out");
  if (v.shape != shape) throw py::value_error("out has the wrong shape");
  *ptr = v.ptr;
  return out;
}

View rows_of(const py::object& obj, const char* name, int64_t& rows, int64_t& cols) {
  View v = view_of(obj, name);
  if (v.shape.empty()) throw py::value_error(std::string(name) + " must have at least one dimension");
  cols = v.shape.back();
  rows = v.size / cols;
  return v;
}

#endif

}  // namespace

void register_cuda(py::module_& m) {
#if defined(FASTLM_WITH_CUDA)
  m.attr("built") = true;
  m.def("device_count", &cuda::device_count, "CUDA devices visible (0 without a device or a driver)");
  m.def("available", [] { return cuda::device_count() > 0; });
  m.def("device_name", [](int i) {
    if (i < 0 || i >= cuda::device_count()) throw py::value_error("no CUDA device " + std::to_string(i));
    return cuda::device_name(i);
  }, "device"_a = 0);
  m.def("runtime_version", &cuda::runtime_version);
  m.def("archs", &cuda::compiled_archs, "the GPU architectures compiled in");
  py::class_<DeviceArray, std::shared_ptr<DeviceArray>>(m, "DeviceArray", "float32 device memory with __cuda_array_interface__")
      .def_static("from_numpy", [](py::array_t<float, py::array::c_style | py::array::forcecast> a) {
        need_device();
        std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
        auto d = std::make_shared<DeviceArray>(shape);
        cuda::copy_to_device(d->data(), a.data(), d->size() * sizeof(float));
        return d;
      })
      .def("to_numpy", [](const DeviceArray& d) {
        py::array_t<float> out(d.shape());
        cuda::copy_to_host(out.mutable_data(), d.data(), d.size() * sizeof(float));
        return out;
      })
      .def_property_readonly("shape", [](const DeviceArray& d) { return py::tuple(py::cast(d.shape())); })
      .def_property_readonly("__cuda_array_interface__", [](const DeviceArray& d) {
        return py::dict("shape"_a = py::tuple(py::cast(d.shape())), "typestr"_a = "<f4",
                        "data"_a = py::make_tuple(reinterpret_cast<uintptr_t>(d.data()), false), "version"_a = 3,
                        "strides"_a = py::none());
      });
  m.def("synchronize", [] { cuda::synchronize(); });
  m.def("matmul", [](const py::object& x, const py::object& w, const py::object& bias, const py::object& out) {
    need_device();
    View xv = view_of(x, "x"), wv = view_of(w, "w");
    if (xv.shape.size() != 2 || wv.shape.size() != 2 || xv.shape[1] != wv.shape[1])
      throw py::value_error("matmul takes x (M, K) and w (N, K)");
    const int64_t M = xv.shape[0], K = xv.shape[1], N = wv.shape[0];
    const float* bp = nullptr;
    if (!bias.is_none()) {
      View bv = view_of(bias, "bias");
      if (bv.size != N) throw py::value_error("bias must have N elements");
      bp = bv.ptr;
    }
    float* yp;
    py::object y = output(out, {M, N}, &yp);
    cuda::sgemm(xv.ptr, wv.ptr, bp, yp, M, N, K);
    return y;
  }, "x"_a, "w"_a, "bias"_a = py::none(), py::kw_only(), "out"_a = py::none(), "y = x @ w.T (+ bias), fp32 (no TF32)");
  m.def("rms_norm", [](const py::object& x, const py::object& w, float eps, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols), wv = view_of(w, "weight");
    if (wv.size != cols) throw py::value_error("weight must have the last dim's size");
    float* yp;
    py::object y = output(out, xv.shape, &yp);
    cuda::rms_norm(xv.ptr, wv.ptr, yp, rows, cols, eps);
    return y;
  }, "x"_a, "weight"_a, "eps"_a = 1e-6f, py::kw_only(), "out"_a = py::none());
  m.def("layer_norm", [](const py::object& x, const py::object& w, const py::object& b, float eps, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols), wv = view_of(w, "weight");
    if (wv.size != cols) throw py::value_error("weight must have the last dim's size");
    const float* bp = nullptr;
    if (!b.is_none()) bp = view_of(b, "bias").ptr;
    float* yp;
    py::object y = output(out, xv.shape, &yp);
    cuda::layer_norm(xv.ptr, wv.ptr, bp, yp, rows, cols, eps);
    return y;
  }, "x"_a, "weight"_a, "bias"_a = py::none(), "eps"_a = 1e-5f, py::kw_only(), "out"_a = py::none());
  m.def("softmax", [](const py::object& x, const py::object& out) {
    need_device();
    int64_t rows, cols;
    View xv = rows_of(x, "x", rows, cols);
    float* yp;
    py::object y = output(out, xv.shape, &yp);
    cuda::softmax(xv.ptr, yp, rows, cols);
    return y;
  }, "x"_a, py::kw_only(), "out"_a = py::none());
  auto binary = [&m](const char* name, void (*fn)(const float*, const float*, float*, int64_t)) {
    m.def(name, [fn](const py::object& a, const py::object& b, const py::object& out) {
      need_device();
      View av = view_of(a, "a"), bv = view_of(b, "b");
      if (av.shape != bv.shape) throw py::value_error("the operands must have the same shape");
      float* yp;
      py::object y = output(out, av.shape, &yp);
      fn(av.ptr, bv.ptr, yp, av.size);
      return y;
    }, "a"_a, "b"_a, py::kw_only(), "out"_a = py::none());
  };
  binary("add", &cuda::add);
  binary("silu_mul", &cuda::silu_mul);
  m.def("gelu_tanh", [](const py::object& x, const py::object& out) {
    need_device();
    View xv = view_of(x, "x");
    float* yp;
    py::object y = output(out, xv.shape, &yp);
    cuda::gelu_tanh(xv.ptr, yp, xv.size);
    return y;
  }, "x"_a, py::kw_only(), "out"_a = py::none());
#else
  m.attr("built") = false;
  m.def("device_count", [] { return 0; });
  m.def("available", [] { return false; });
#endif
}

}  // namespace fastlm
