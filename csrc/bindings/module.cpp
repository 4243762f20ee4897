// fastlm._C: the native module. _C.kernels holds the kernels on NumPy arrays (dispatching to the
// active ISA), _C.kernels.ref the scalar references; the rest reports and sets the build's state.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "bindings/cuda.h"
#include "bindings/kernels.h"
#include "bindings/model.h"
#include "base/cpu.h"
#include "kernels/dispatch.h"
#include "runtime/model.h"
#include "base/threadpool.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlm native core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const py::cast_error& e) {  // an argument of the wrong type, found past pybind's own checks
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def("build_info", [] {
    py::dict d;
    d["native"] = std::string(FASTLM_BUILD_NATIVE);
    d["cuda"] = std::string(FASTLM_BUILD_CUDA);
    d["compiler"] = std::string(FASTLM_BUILD_COMPILER);
    d["build_type"] = std::string(FASTLM_BUILD_TYPE);
    d["isas"] = fastlm::compiled_isas();
    return d;
  }, "how this extension was built");
  m.def("cpu_info", [] {
    const auto& f = fastlm::cpu_features();
    py::dict d;
    d["vendor"] = f.vendor;
    d["brand"] = f.brand;
    d["features"] = fastlm::cpu_feature_names();
    d["physical_cores"] = fastlm::physical_cores();
    d["supported_isas"] = fastlm::supported_isas();
    return d;
  }, "what the CPU offers");
  m.def("get_isa", &fastlm::current_isa, "the kernel ISA in use");
  m.def("set_isa", &fastlm::set_isa, py::arg("name"),
        "use the kernels of ISA `name` (scalar, avx2, avx512); ValueError if unsupported here");
  m.def("best_isa", &fastlm::best_isa);
  m.def("get_num_threads", &fastlm::num_threads, "threads a kernel uses, the caller included");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(n));
    py::gil_scoped_release nogil;
    fastlm::set_num_threads(n);
  }, py::arg("n"));
  m.def("default_num_threads", &fastlm::default_num_threads);
  m.def("read_bandwidth", [](int64_t bytes, int repeats) {
    if (bytes < 1 || repeats < 1) throw py::value_error("bytes and repeats must be >= 1");
    py::gil_scoped_release nogil;
    return fastlm::read_bandwidth(bytes, repeats);
  }, py::arg("bytes") = int64_t(1) << 30, py::arg("repeats") = 3,
     "bytes/s of a streaming read over the kernel threads (best of repeats): decode's memory roofline");
  py::tuple projections(int(fastlm::Proj::kCount));
  for (int p = 0; p < int(fastlm::Proj::kCount); ++p) projections[p] = fastlm::proj_name(fastlm::Proj(p));
  m.attr("PROJECTIONS") = projections;  // the linear layers of a decoder layer, by the names the loaders use

  py::module_ k = m.def_submodule("kernels", "CPU kernels on NumPy arrays");
  fastlm::register_kernels(k, &fastlm::kernels, true);
  py::module_ r = k.def_submodule("ref", "scalar reference kernels (the test oracles)");
  fastlm::register_kernels(r, &fastlm::ref::kernel_table, false);
  fastlm::register_model(m);
  py::module_ c = m.def_submodule("cuda", "CUDA kernels on device arrays (built when a CUDA toolkit was found)");
  fastlm::register_cuda(c);
  py::module_ e = m.def_submodule("cuda_emulated", "the CUDA kernels' sources run on the host CPU under a SIMT emulation (for checking them without a GPU)");
  fastlm::register_cuda_emulated(e);
}
