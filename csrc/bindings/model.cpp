// fastlm._C.Model: the executor on NumPy arrays. weights are copied/packed at load; prefill and
// decode run a whole forward step with the GIL released.
#include "bindings/model.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <string>

#include "bindings/arrays.h"
#include "bindings/model_api.h"
#include "runtime/model.h"

namespace py = pybind11;

namespace fastlm {
namespace {

// a borrowed array stays alive as long as the model that reads it
void hold(py::object& self, const py::array& a) {
  if (!py::hasattr(self, "_borrowed")) self.attr("_borrowed") = py::list();
  self.attr("_borrowed").cast<py::list>().append(a);
}

// the binding of a quantized (vocab, hidden) setter: records checked, borrowed ones held
auto set_vocab_q(void (Model::*set)(const uint8_t*, QType, int64_t, bool), const char* what) {
  return [set, what](py::object self, const py::object& q_obj, const std::string& qtype, int64_t G, bool borrow) {
    Model& md = self.cast<Model&>();
    py::array keep;
    const QWeight w = qweight_of(q_obj, qtype, md.spec().hidden, G, keep);
    if (w.N != md.spec().vocab)
      throw py::value_error(std::string("the quantized ") + what + " has " + std::to_string(w.N) +
                            " rows, the vocabulary " + std::to_string(md.spec().vocab));
    (md.*set)(w.data, w.type, w.G, borrow);
    if (borrow) hold(self, keep);
  };
}

}  // namespace

void register_model(py::module_& m) {
  using namespace pybind11::literals;
  py::class_<Model> c(m, "Model", "A decoder executor: packed weights, KV cache slots, forward steps.", py::dynamic_attr());
  c.def(py::init([](const py::dict& d) { return new Model(spec_from(d)); }), "spec"_a)
      .def_property_readonly("isa", &Model::isa)
      .def_property_readonly("device", [](const Model&) { return "cpu"; })
      .def("set_linear_q", [](py::object self, int64_t layer, const std::string& name, const py::object& q_obj,
                              const std::string& qtype, int64_t K, int64_t G, const py::object& b_obj, bool borrow) {
             py::array keep, b;
             QWeight w = qweight_of(q_obj, qtype, K, G, keep);
             const float* bp = optional_vec(b_obj, "bias", w.N, b);
             self.cast<Model&>().set_linear_q(layer, proj_from(name), w.data, w.type, w.N, K, w.G, bp, borrow);
             if (borrow) hold(self, keep);
           }, "layer"_a, "name"_a, "q"_a, "qtype"_a, "K"_a, "group_size"_a, "bias"_a = py::none(), "borrow"_a = false,
           "a quantized linear weight: (N, row_bytes) uint8 records; borrow=True reads them in place (the model "
           "keeps a reference: a memory-mapped checkpoint stays mapped), else they are copied")
      .def("set_embedding_q", set_vocab_q(&Model::set_embedding_q, "embedding"), "q"_a, "qtype"_a, "group_size"_a,
           "borrow"_a = false)
      .def("set_lm_head_q", set_vocab_q(&Model::set_lm_head_q, "lm_head"), "q"_a, "qtype"_a, "group_size"_a,
           "borrow"_a = false)
      .def("set_lm_head_rows", [](Model& md, const py::object& w_obj, int64_t r0) {
             py::array w = checked(w_obj, "lm_head rows", {DType::kF32, DType::kBF16}, 2, 2);
             if (w.shape(1) != md.spec().hidden)
               throw py::value_error("lm_head rows must have " + std::to_string(md.spec().hidden) + " columns, got shape " +
                                     shape_str(w));
             const DType wt = wtype_of(w);
             py::gil_scoped_release nogil;
             md.set_lm_head_rows(w.data(), wt, r0, w.shape(0));
           }, "w"_a, "row0"_a,
           "rows row0 .. of the float lm_head, in order from row 0 (a large head packed piece by piece)")
      .def("tie_embedding", &Model::tie_embedding,
           "the embedding is the float lm_head already set (a tied model loaded without a copy of its embedding)")
      .def("set_profiling", &Model::set_profiling, "on"_a)
      .def("profile", &Model::profile, "seconds per kind of op since reset_profile()")
      .def("reset_profile", &Model::reset_profile);
  def_model_api(c);
}

}  // namespace fastlm
