// GPU bindings: the backend module (devices, DeviceArray, the kernel families, the decoder as
// Model), one per backend (see gpu_arrays.h).
#include <string>

#include "bindings/gpu_arrays.h"
#include "bindings/model_api.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

namespace {

void def_device_model(py::module_& m) {
  using namespace pybind11::literals;
  const char* device = kDLDevice == 1 ? "cuda-emulated" : "cuda";
  py::class_<DeviceModel> c(m, "Model", "The decoder on the GPU: the CPU executor's interface, weights and KV cache "
                            "in device memory.", py::dynamic_attr());
  c.def(py::init([](const py::dict& d) { return new DeviceModel(spec_from(d)); }), "spec"_a)
      .def_property_readonly("isa", [device](const DeviceModel&) { return device; })
      .def_property_readonly("device", [device](const DeviceModel&) { return device; });
  for (const char* name : {"set_linear_q", "set_embedding_q", "set_lm_head_q"})
    c.def(name, [](const py::args&, const py::kwargs&) {
      throw py::value_error("quantized (int8 / int4) weights run on the CPU; the CUDA decoder takes float32 or "
                            "bfloat16 weights (dtype='float32' / 'bfloat16')");
    });
  c.def("set_profiling", [](DeviceModel&, bool on) {
     if (on) throw py::value_error("profiling times the CPU executor's ops; the CUDA decoder has no profile");
   }, "on"_a)
      .def("profile", [](const DeviceModel&) { return std::vector<std::pair<std::string, double>>{}; })
      .def("reset_profile", [](DeviceModel&) {})
      .def_property("graphs", &DeviceModel::graphs, &DeviceModel::set_graphs,
                    "decode steps replayed as CUDA graphs (default on; FASTLM_CUDA_GRAPHS=0 turns it off)")
      .def_property_readonly("graph_replays", &DeviceModel::graph_replays, "decode steps run as a graph so far")
      .def_property_readonly("flash_prefills", &DeviceModel::flash_prefills,
                             "prefill steps whose attention ran as FlashAttention-2 over the bf16 cache")
      .def_property_readonly("kv_dtype", [](const DeviceModel& m) {
        return m.kv_type() == DType::kBF16 ? "bfloat16" : "float32";
      }, "the KV cache's element type: bfloat16 for a bf16 model, else float32");
  def_model_api(c);
}

}  // namespace

void register_backend(py::module_& m) {
  m.attr("built") = true;
  def_device_model(m);
  m.attr("emulated") = bool(kDLDevice == 1);
  m.def("device_count", &device_count, "CUDA devices visible (0 without a device or a driver)");
  m.def("available", [] { return device_unusable().empty(); },
        "a CUDA device the kernels run on is visible (compute capability 8.0 or newer)");
  m.def("unavailable_reason", &device_unusable, "why available() is False ('' when it is True)");
  m.def("device_name", [](int i) {
    if (i < 0 || i >= device_count()) throw py::value_error("no CUDA device " + std::to_string(i));
    return device_name(i);
  }, "device"_a = 0);
  m.def("runtime_version", &runtime_version);
  m.def("archs", &compiled_archs, "the GPU architectures compiled in");
  py::class_<DeviceArray, std::shared_ptr<DeviceArray>> da(m, "DeviceArray",
      "device memory (float32, bfloat16, float16, int8, int32) with DLPack and the array interface");
  da.def_static("from_numpy", &from_numpy, "a"_a, "dtype"_a = "",
                "copy a NumPy array to the device; dtype='bfloat16' rounds float32 to bfloat16")
      .def_static("empty", [](std::vector<int64_t> shape, const std::string& dtype) {
        need_device();
        return std::make_shared<DeviceArray>(shape, dtype_from_name(dtype));
      }, "shape"_a, "dtype"_a = "float32")
      .def("to_numpy", &to_numpy, "copy to the host (bfloat16 widens to float32)")
      .def_property_readonly("shape", [](const DeviceArray& d) { return py::tuple(py::cast(d.shape())); })
      .def_property_readonly("dtype", [](const DeviceArray& d) { return dtype_name(d.dtype()); })
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def("__dlpack__", [](const std::shared_ptr<DeviceArray>& d, const py::args&, const py::kwargs&) {
        synchronize();  // everything launched so far is visible to the consumer's stream
        return to_dlpack(d);
      })
      .def("__dlpack_device__", [](const DeviceArray&) { return py::make_tuple(kDLDevice, 0); })
      .def("__repr__", [](const DeviceArray& d) {
        std::string s = "DeviceArray(shape=(";
        for (size_t i = 0; i < d.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(d.shape()[i]);
        return s + (d.shape().size() == 1 ? ",)" : ")") + ", dtype=" + dtype_name(d.dtype()) + ")";
      });
  da.def_property_readonly(kInterface, [](const DeviceArray& d) -> py::object {
    const char* ts = d.dtype() == DType::kF32 ? "<f4" : d.dtype() == DType::kF16 ? "<f2"
                     : d.dtype() == DType::kI8 ? "|i1" : d.dtype() == DType::kI32 ? "<i4" : nullptr;
    if (!ts) throw py::attribute_error("bfloat16 has no array-interface typestr; use DLPack");
    return py::dict("shape"_a = py::tuple(py::cast(d.shape())), "typestr"_a = ts,
                    "data"_a = py::make_tuple(reinterpret_cast<uintptr_t>(d.data()), false), "version"_a = 3,
                    "strides"_a = py::none());
  });
  m.def("synchronize", [] { synchronize(); });
  def_linear_kernels(m);
  def_pointwise_kernels(m);
  def_attention_kernels(m);
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
