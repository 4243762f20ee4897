// The array side of one GPU backend's bindings. Every gpu_*.cpp file is compiled twice: for
// fastlm::cuda (with a CUDA toolkit) and, with FASTLM_SIMT, for fastlm::cuda_emu (the SIMT
// emulation, always); FASTLM_GPU_NS names the namespace. Inputs are DeviceArrays or any object
// exposing the backend's array interface (__cuda_array_interface__ for CUDA, __array_interface__
// for the emulation, whose device memory is host memory) or __dlpack__ (torch, CuPy, JAX); outputs
// are written to `out` or to a new DeviceArray, which torch / CuPy take without a copy
// (torch.from_dlpack, torch.as_tensor).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "cuda/kernels.h"
#include "cuda/model.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
namespace py = pybind11;

#if defined(FASTLM_SIMT)
constexpr const char* kInterface = "__array_interface__";
constexpr int kDLDevice = 1;  // kDLCPU
#else
constexpr const char* kInterface = "__cuda_array_interface__";
constexpr int kDLDevice = 2;  // kDLCUDA
#endif

// device memory, owned
class DeviceArray {
 public:
  DeviceArray(std::vector<int64_t> shape, DType dtype) : shape_(std::move(shape)), dtype_(dtype) {
    for (int64_t d : shape_) {
      if (d < 0) throw py::value_error("negative dimension");
      size_ *= size_t(d);
    }
    mem_ = Buffer(size_ * dtype_size(dtype_));
  }

  void* data() const { return mem_.get(); }
  size_t size() const { return size_; }
  size_t nbytes() const { return mem_.bytes(); }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }

 private:
  Buffer mem_;
  size_t size_ = 1;
  std::vector<int64_t> shape_;
  DType dtype_;
};

struct View {
  void* ptr = nullptr;
  std::vector<int64_t> shape;
  int64_t size = 1;
  DType dtype = DType::kF32;
  py::object keep;  // a DLPack capsule or the source object
};

DType dtype_from_name(const std::string& s);  // "float32", "bfloat16", "float16", "int8", "int32"
void need_device();                            // std::runtime_error when no usable device is visible
GemmKernel gemm_kernel(const std::string& name);  // "auto", "mma", "wgmma"
// the array behind obj on the device (a DeviceArray, the array interface, or DLPack)
View view_of(const py::object& obj, const char* name);
// the same, of one of the dtypes `ok` (TypeError / ValueError naming `name`)
View typed(const py::object& obj, const char* name, std::initializer_list<DType> ok);
// `out` if given (checked), else a new DeviceArray; *ptr: where to write
py::object output(const py::object& out, const std::vector<int64_t>& shape, DType dt, void** ptr);
View rows_of(const py::object& obj, const char* name, int64_t& rows, int64_t& cols);  // float32 (rows, cols)
const float* optional_f32(const py::object& obj, const char* name, int64_t n, std::vector<View>& keep);
py::capsule to_dlpack(const std::shared_ptr<DeviceArray>& a);
std::shared_ptr<DeviceArray> from_numpy(const py::array& a, const std::string& dtype);
py::array to_numpy(const DeviceArray& d);

// the kernels on device arrays, by family (gpu_linear.cpp, gpu_pointwise.cpp, gpu_attention.cpp)
void def_linear_kernels(py::module_& m);
void def_pointwise_kernels(py::module_& m);
void def_attention_kernels(py::module_& m);
// the whole backend module: devices, DeviceArray, the kernels, the decoder (gpu_backend.cpp)
void register_backend(py::module_& m);

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
