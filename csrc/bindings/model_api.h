// What the bindings of the CPU executor (fastlm._C.Model) and of the device decoder
// (fastlm._C.cuda.Model) share: the spec from a dict, checked weights and token ids, and the
// methods both expose with the same names and checks, so the Python loaders and the generation
// loop drive either.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "model/slots.h"
#include "runtime/model.h"

namespace fastlm {
namespace py = pybind11;

constexpr int64_t kPrefillSignalChunk = 512;  // prompt tokens between two looks for Ctrl-C

inline Proj proj_from(const std::string& name) { return proj_from_name(name); }

inline DType wtype_of(const py::array& a) { return is_bf16(a) ? DType::kBF16 : DType::kF32; }

inline ModelSpec spec_from(const py::dict& d) {
  ModelSpec s;
  auto get = [&](const char* key) {
    if (!d.contains(key)) throw py::value_error(std::string("model spec lacks '") + key + "'");
    return d[key];
  };
  s.n_layers = get("n_layers").cast<int64_t>();
  s.hidden = get("hidden").cast<int64_t>();
  s.n_heads = get("n_heads").cast<int64_t>();
  s.n_kv_heads = get("n_kv_heads").cast<int64_t>();
  s.head_dim = get("head_dim").cast<int64_t>();
  s.ffn = get("ffn").cast<int64_t>();
  s.vocab = get("vocab").cast<int64_t>();
  s.max_seq = get("max_seq").cast<int64_t>();
  s.norm_eps = get("norm_eps").cast<float>();
  const std::string norm = get("norm").cast<std::string>(), mlp = get("mlp").cast<std::string>(),
                    pos = get("pos").cast<std::string>();
  if (norm != "rms" && norm != "layer") throw py::value_error("norm must be 'rms' or 'layer', got '" + norm + "'");
  if (mlp != "swiglu" && mlp != "gelu") throw py::value_error("mlp must be 'swiglu' or 'gelu', got '" + mlp + "'");
  if (pos != "rope" && pos != "learned") throw py::value_error("pos must be 'rope' or 'learned', got '" + pos + "'");
  s.norm = norm == "rms" ? NormKind::kRms : NormKind::kLayer;
  s.mlp = mlp == "swiglu" ? MlpKind::kSwiGLU : MlpKind::kGelu;
  s.pos = pos == "rope" ? PosKind::kRope : PosKind::kLearned;
  if (s.pos == PosKind::kRope) {
    py::array f = checked(get("rope_inv_freq"), "rope_inv_freq", {DType::kF32}, 1, 1);
    s.rope_inv_freq.assign(cf32(f), cf32(f) + f.shape(0));
    s.rotary_dim = d.contains("rotary_dim") ? d["rotary_dim"].cast<int64_t>() : s.head_dim;
    s.rope_interleaved = d.contains("rope_interleaved") && d["rope_interleaved"].cast<bool>();
  }
  s.qk_norm = d.contains("qk_norm") && d["qk_norm"].cast<bool>();
  s.sliding_window = d.contains("sliding_window") ? d["sliding_window"].cast<int64_t>() : 0;
  if (s.sliding_window < 0)
    throw py::value_error("sliding_window must be >= 0 (0: none), got " + std::to_string(s.sliding_window));
  if (d.contains("layer_window")) s.layer_window = d["layer_window"].cast<std::vector<int64_t>>();
  if (d.contains("layer_rope_inv_freq")) {
    for (const auto& f : d["layer_rope_inv_freq"]) {
      py::array a = checked(py::reinterpret_borrow<py::object>(f), "layer_rope_inv_freq[i]", {DType::kF32}, 1, 1);
      s.layer_rope_inv_freq.emplace_back(cf32(a), cf32(a) + a.shape(0));
    }
  }
  auto flag = [&](const char* key) { return d.contains(key) && d[key].cast<bool>(); };
  auto number = [&](const char* key) { return d.contains(key) ? d[key].cast<float>() : 0.0f; };
  s.post_norms = flag("post_norms");
  s.gelu_gate = flag("gelu_gate");
  s.embed_scale = number("embed_scale");
  s.attn_scale = number("attn_scale");
  s.attn_softcap = number("attn_softcap");
  s.final_softcap = number("final_softcap");
  if (d.contains("rope_attention_factor")) s.rope_attention_factor = d["rope_attention_factor"].cast<float>();
  return s;
}

inline py::array weight_2d(const py::object& obj, const char* name, int64_t N, int64_t K) {
  py::array w = checked(obj, name, {DType::kF32, DType::kBF16}, 2, 2);
  if (w.shape(0) != N || w.shape(1) != K)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(N) + ", " + std::to_string(K) +
                          "), got " + shape_str(w));
  return w;
}

inline std::vector<int32_t> token_ids(const py::object& obj, const char* name) {
  py::array a = checked(obj, name, {DType::kI32, DType::kI64}, 1, 1);
  std::vector<int32_t> out(static_cast<size_t>(a.shape(0)));
  for (py::ssize_t i = 0; i < a.shape(0); ++i) {
    int64_t v = has_dt(a, DType::kI32) ? static_cast<const int32_t*>(a.data())[i] : static_cast<const int64_t*>(a.data())[i];
    if (v < INT32_MIN || v > INT32_MAX) throw py::value_error(std::string(name) + " holds an id out of range: " + std::to_string(v));
    out[size_t(i)] = int32_t(v);
  }
  return out;
}


// the weight setters, slots and forward steps of an executor class M (Model or a DeviceModel)
template <class M>
void def_model_api(py::class_<M>& c) {
  using namespace pybind11::literals;
  c.def_property_readonly("vocab", [](const M& md) { return md.spec().vocab; })
      .def_property_readonly("max_seq", [](const M& md) { return md.spec().max_seq; })
      .def("set_linear", [](M& md, int64_t layer, const std::string& name, const py::object& w_obj,
                            const py::object& b_obj) {
             py::array w = checked(w_obj, "w", {DType::kF32, DType::kBF16}, 2, 2);
             py::array b;
             const float* bp = optional_vec(b_obj, "bias", w.shape(0), b);
             Proj p = proj_from(name);
             const DType wt = wtype_of(w);  // asks Python: before the GIL goes
             py::gil_scoped_release nogil;
             md.set_linear(layer, p, w.data(), wt, w.shape(0), w.shape(1), bp);
           }, "layer"_a, "name"_a, "w"_a, "bias"_a = py::none())
      .def("set_norm", [](M& md, int64_t layer, int which, const py::object& w_obj, const py::object& b_obj) {
             py::array w, b;
             const int64_t n = norm_size(md.spec(), layer, which);
             const float* wp = optional_vec(w_obj, "weight", n, w);
             if (!wp) throw py::type_error("norm weight must be a float32 array, got None");
             const float* bp = optional_vec(b_obj, "bias", n, b);
             md.set_norm(layer, which, wp, bp);
           }, "layer"_a, "which"_a, "weight"_a, "bias"_a = py::none())
      .def("set_embedding", [](M& md, const py::object& w_obj) {
             py::array w = weight_2d(w_obj, "embedding", md.spec().vocab, md.spec().hidden);
             md.set_embedding(w.data(), wtype_of(w));
           }, "w"_a)
      .def("set_position_embedding", [](M& md, const py::object& w_obj) {
             py::array w = checked(w_obj, "position embedding", {DType::kF32}, 2, 2);
             if (w.shape(1) != md.spec().hidden)
               throw py::value_error("position embedding must have " + std::to_string(md.spec().hidden) +
                                     " columns, got shape " + shape_str(w));
             md.set_position_embedding(cf32(w), w.shape(0));
           }, "w"_a)
      .def("set_lm_head", [](M& md, const py::object& w_obj) {
             py::array w = weight_2d(w_obj, "lm_head", md.spec().vocab, md.spec().hidden);
             const DType wt = wtype_of(w);
             py::gil_scoped_release nogil;
             md.set_lm_head(w.data(), wt);
           }, "w"_a)
      .def("tie_lm_head", [](M& md) {
             py::gil_scoped_release nogil;
             md.tie_lm_head();
           })
      .def("missing", &M::missing)
      .def_property_readonly("weight_bytes", &M::weight_bytes)
      .def_property_readonly("kv_bytes_per_slot", &M::kv_bytes_per_slot)
      .def_property_readonly("n_slots", &M::n_slots)
      .def("ensure_slots", [](M& md, int64_t n) {
             if (n < 0) throw py::value_error("slots must be >= 0");
             md.ensure_slots(n);
           }, "n"_a)
      .def("slot_len", &M::slot_len, "slot"_a)
      .def("truncate_slot", &M::truncate_slot, "slot"_a, "length"_a)
      .def("copy_slot", &M::copy_slot, "src"_a, "dst"_a, "length"_a,
           "the first `length` cached positions of slot src into slot dst")
      .def("prefill", [](M& md, int64_t slot, const py::object& tok_obj, bool all_logits) {
             std::vector<int32_t> toks = token_ids(tok_obj, "tokens");
             const int64_t T = int64_t(toks.size()), V = md.spec().vocab;
             check_prefill_room(md.slot_len(slot), T, md.spec().max_seq);  // the whole prompt fits, before any chunk
             py::array_t<float> logits({all_logits ? T : int64_t(1), V});
             float* lp = logits.mutable_data();
             // in chunks, with Ctrl-C noticed between them (a long prompt takes minutes); a chunk cut
             // off this way leaves the slot holding the chunks before it
             for (int64_t t0 = 0; t0 < T; t0 += kPrefillSignalChunk) {
               const int64_t n = std::min(kPrefillSignalChunk, T - t0);
               {
                 py::gil_scoped_release nogil;
                 md.prefill(slot, toks.data() + t0, n, all_logits ? lp + t0 * V : lp, all_logits);
               }
               if (t0 + n < T && PyErr_CheckSignals() != 0) throw py::error_already_set();
             }
             return logits;
           }, "slot"_a, "tokens"_a, "all_logits"_a = false,
           "run tokens of one sequence after what its slot holds; logits of the last (or every) position")
      .def("decode", [](M& md, const py::object& slots_obj, const py::object& tok_obj) {
             py::array sl = checked(slots_obj, "slots", {DType::kI64}, 1, 1);
             std::vector<int32_t> toks = token_ids(tok_obj, "tokens");
             if (int64_t(toks.size()) != sl.shape(0))
               throw py::value_error("slots and tokens must have the same length, got " + std::to_string(sl.shape(0)) +
                                     " and " + std::to_string(toks.size()));
             const int64_t B = sl.shape(0), V = md.spec().vocab;
             std::vector<int64_t> slots(static_cast<const int64_t*>(sl.data()), static_cast<const int64_t*>(sl.data()) + B);
             py::array_t<float> logits({B, V});
             float* lp = logits.mutable_data();
             {
               py::gil_scoped_release nogil;
               md.decode(slots.data(), toks.data(), B, lp);
             }
             return logits;
           }, "slots"_a, "tokens"_a, "one token for each sequence (one slot each); logits (B, vocab)");
}

}  // namespace fastlm
