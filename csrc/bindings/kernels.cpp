// fastlm.kernels: the CPU kernels on NumPy arrays. every argument is checked here (dtype, rank,
// shape, contiguity, emptiness) and a bad one raises TypeError/ValueError naming it; the kernels
// themselves run with the GIL released.
#include "bindings/kernels.h"

#include "bindings/arrays.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "base/cpu.h"
#include "kernels/dispatch.h"

namespace py = pybind11;

namespace fastlm {
namespace {

using Table = const KernelTable& (*)();

}  // namespace

// ---- packed weights ----

PackedWeight::PackedWeight(const py::object& w_obj) {
  py::array w = checked(w_obj, "w", {DType::kF32, DType::kBF16}, 2, 2);
  const KernelTable& t = kernels();
  N_ = w.shape(0);
  K_ = w.shape(1);
  wtype_ = is_bf16(w) ? DType::kBF16 : DType::kF32;
  nr_ = t.pack_nr;
  isa_ = t.name;
  size_t bytes = size_t(packed_weight_elems(N_, K_, nr_)) * dtype_size(wtype_);
  data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  if (!data_) throw std::bad_alloc();
  py::gil_scoped_release nogil;
  t.pack_weight(w.data(), wtype_, N_, K_, data_.get());
}

std::string PackedWeight::dtype() const { return wtype_ == DType::kF32 ? "float32" : "bfloat16"; }

size_t PackedWeight::nbytes() const {
  return size_t(packed_weight_elems(N_, K_, nr_)) * dtype_size(wtype_);
}

// ---- the kernels ----

namespace {

py::array_t<float> matmul(Table table, const py::object& x_obj, const py::object& w_obj,
                          const py::object& bias_obj, const py::object& out_obj) {
  const KernelTable& t = table();
  py::array x = checked(x_obj, "x", {DType::kF32}, 2, 2);
  MatmulArgs a{};
  py::array w, bias;
  if (py::isinstance<PackedWeight>(w_obj)) {
    const PackedWeight& pw = w_obj.cast<const PackedWeight&>();
    if (std::string(t.name) == "ref") throw py::type_error("the reference matmul takes an unpacked w");
    if (pw.nr() != t.pack_nr) {
      throw py::value_error("w was packed for ISA " + pw.isa() + " (panels of " + std::to_string(pw.nr()) +
                            "); the current ISA " + t.name + " uses panels of " + std::to_string(t.pack_nr) +
                            ": pack it again");
    }
    a.w = pw.data();
    a.N = pw.N();
    a.K = pw.K();
    a.wtype = pw.wtype();
    a.packed = true;
  } else {
    w = checked(w_obj, "w", {DType::kF32, DType::kBF16}, 2, 2);
    a.w = w.data();
    a.N = w.shape(0);
    a.K = w.shape(1);
    a.wtype = is_bf16(w) ? DType::kBF16 : DType::kF32;
  }
  if (x.shape(1) != a.K) {
    throw py::value_error("x and w disagree on K: x has shape " + shape_str(x) + " (K = " +
                          std::to_string(x.shape(1)) + "), w has K = " + std::to_string(a.K));
  }
  a.x = cf32(x);
  a.M = x.shape(0);
  a.bias = optional_vec(bias_obj, "bias", a.N, bias);
  py::array_t<float> out = make_out(out_obj, {a.M, a.N});
  no_alias(out, x, "x");
  no_alias(out, w, "w");
  no_alias(out, bias, "bias");
  a.y = out.mutable_data();
  a.workspace = workspace(t.matmul_workspace(a.M, a.N, a.K, a.packed));
  {
    py::gil_scoped_release nogil;
    t.matmul(a);
  }
  return out;
}

py::array_t<float> attention(Table table, const py::object& q_obj, const py::object& k_obj,
                             const py::object& v_obj, bool causal, const py::object& scale_obj,
                             const py::object& out_obj, int64_t window, float softcap) {
  py::array q = checked(q_obj, "q", {DType::kF32}, 3, 3);
  py::array k = checked(k_obj, "k", {DType::kF32}, 3, 3);
  py::array v = checked(v_obj, "v", {DType::kF32}, 3, 3);
  if (shape_of(k) != shape_of(v))
    throw py::value_error("k and v must have the same shape, got " + shape_str(k) + " and " + shape_str(v));
  const int64_t H = q.shape(0), T = q.shape(1), D = q.shape(2), Hkv = k.shape(0), S = k.shape(1);
  if (k.shape(2) != D)
    throw py::value_error("q and k must have the same head dim: q " + shape_str(q) + ", k " + shape_str(k));
  if (H % Hkv != 0)
    throw py::value_error("query heads (" + std::to_string(H) + ") must be a multiple of kv heads (" +
                          std::to_string(Hkv) + ")");
  if (T > S)
    throw py::value_error("q has more positions (T = " + std::to_string(T) + ") than k/v (S = " +
                          std::to_string(S) + "): queries must sit at the end of the keys");
  float scale = 1.0f / std::sqrt(float(D));
  if (!scale_obj.is_none()) {
    if (py::isinstance<py::bool_>(scale_obj) || !(py::isinstance<py::float_>(scale_obj) || py::isinstance<py::int_>(scale_obj)))
      throw py::type_error("scale must be a number or None, got " + std::string(py::str(py::type::of(scale_obj).attr("__name__"))));
    scale = scale_obj.cast<float>();
    if (!std::isfinite(scale)) throw py::value_error("scale must be finite, got " + std::to_string(scale));
  }
  if (window < 0) throw py::value_error("window must be >= 0 (0: no sliding window), got " + std::to_string(window));
  if (window > 0 && !causal) throw py::value_error("a sliding window needs causal=True");
  if (!(softcap >= 0) || !std::isfinite(softcap))
    throw py::value_error("softcap must be a finite number >= 0 (0: off), got " + std::to_string(softcap));
  py::array_t<float> out = make_out(out_obj, {H, T, D});
  no_alias(out, q, "q");
  no_alias(out, k, "k");
  no_alias(out, v, "v");
  AttentionArgs a{cf32(q), cf32(k), cf32(v), out.mutable_data(), H, Hkv, T, S, D, T * D, D, S * D, T * D, D,
                  scale, causal, window, softcap};
  const KernelTable& t = table();
  py::gil_scoped_release nogil;
  t.attention(a);
  return out;
}

py::array_t<float> rms_norm(Table table, const py::object& x_obj, const py::object& w_obj, float eps,
                            const py::object& out_obj) {
  py::array x = checked(x_obj, "x", {DType::kF32}, 1, 32);
  const int64_t cols = x.shape(x.ndim() - 1), rows = x.size() / cols;
  py::array w;
  const float* wp = optional_vec(w_obj, "weight", cols, w);
  if (!(eps >= 0.0f)) throw py::value_error("eps must be >= 0, got " + std::to_string(eps));
  py::array_t<float> out = make_out(out_obj, shape_of(x));
  same_or_apart(out, x, "x");
  no_alias(out, w, "weight");
  float* y = out.mutable_data();
  const KernelTable& t = table();
  py::gil_scoped_release nogil;
  t.rms_norm(cf32(x), wp, y, rows, cols, eps);
  return out;
}

py::array_t<float> layer_norm(Table table, const py::object& x_obj, const py::object& w_obj,
                              const py::object& b_obj, float eps, const py::object& out_obj) {
  py::array x = checked(x_obj, "x", {DType::kF32}, 1, 32);
  const int64_t cols = x.shape(x.ndim() - 1), rows = x.size() / cols;
  py::array w, b;
  const float* wp = optional_vec(w_obj, "weight", cols, w);
  const float* bp = optional_vec(b_obj, "bias", cols, b);
  if (!(eps >= 0.0f)) throw py::value_error("eps must be >= 0, got " + std::to_string(eps));
  py::array_t<float> out = make_out(out_obj, shape_of(x));
  same_or_apart(out, x, "x");
  no_alias(out, w, "weight");
  no_alias(out, b, "bias");
  float* y = out.mutable_data();
  const KernelTable& t = table();
  py::gil_scoped_release nogil;
  t.layer_norm(cf32(x), wp, bp, y, rows, cols, eps);
  return out;
}

py::array q_quantize(Table table, const py::object& w_obj, const std::string& qtype, int64_t G) {
  const KernelTable& t = table();
  py::array w = checked(w_obj, "w", {DType::kF32}, 2, 2);
  const QType qt = qtype_of(qtype);
  if (q_is_ggml(qt))
    throw py::value_error("q_quantize writes fastlm's q8 / q4 records; " + qtype + " blocks are read from GGUF files");
  if (G != 32 && G != 64 && G != 128) throw py::value_error("group_size must be 32, 64 or 128, got " + std::to_string(G));
  const int64_t N = w.shape(0), K = w.shape(1);
  py::array_t<uint8_t> out({N, q_row_bytes(qt, K, G)});
  uint8_t* op = out.mutable_data();
  const float* wp = cf32(w);
  for (int64_t i = 0; i < N * K; ++i)  // a NaN or inf would quantize to -127 * scale, silently
    if (!std::isfinite(wp[i]))
      throw py::value_error("w holds a non-finite value at (" + std::to_string(i / K) + ", " + std::to_string(i % K) +
                            "): it cannot be quantized");
  py::gil_scoped_release nogil;
  t.q_quantize(wp, N, K, qt, G, op);
  return std::move(out);
}

py::array_t<float> q_dequantize(Table table, const py::object& q_obj, const std::string& qtype, int64_t K, int64_t G) {
  const KernelTable& t = table();
  py::array keep;
  const QWeight w = qweight_of(q_obj, qtype, K, G, keep);
  py::array_t<float> out({w.N, K});
  float* op = out.mutable_data();
  py::gil_scoped_release nogil;
  for (int64_t n = 0; n < w.N; ++n) t.q_dequantize_row(w, n, op + n * K);
  return out;
}

py::array_t<float> q_matmul(Table table, const py::object& x_obj, const py::object& q_obj, const std::string& qtype,
                            int64_t G, const py::object& bias_obj, const py::object& out_obj) {
  const KernelTable& t = table();
  py::array x = checked(x_obj, "x", {DType::kF32}, 2, 2);
  const int64_t M = x.shape(0), K = x.shape(1);
  py::array keep, bias;
  QWeight w = qweight_of(q_obj, qtype, K, G, keep);
  w.bias = optional_vec(bias_obj, "bias", w.N, bias);
  py::array_t<float> out = make_out(out_obj, {M, w.N});
  no_alias(out, x, "x");
  no_alias(out, keep, "q");
  no_alias(out, bias, "bias");
  QMatmulArgs a{cf32(x), M, K, &w, 1, out.mutable_data(), w.N};
  py::gil_scoped_release nogil;
  t.q_matmul(a);
  return out;
}

py::array_t<float> rope(Table table, const py::object& x_obj, const py::object& pos_obj, double theta,
                        const py::object& inv_freq_obj, const py::object& rot_obj, bool interleaved,
                        const py::object& out_obj) {
  py::array x = checked(x_obj, "x", {DType::kF32}, 2, 3);
  const int64_t T = x.shape(0), H = x.ndim() == 3 ? x.shape(1) : 1, D = x.shape(x.ndim() - 1);
  int64_t rot = D;
  if (!rot_obj.is_none()) {
    rot = rot_obj.cast<int64_t>();
    if (rot <= 0 || rot > D || rot % 2)
      throw py::value_error("rotary_dim must be even and in [2, " + std::to_string(D) + "], got " +
                            std::to_string(rot));
  } else if (D % 2) {
    throw py::value_error("the head dim must be even for rope, got " + std::to_string(D));
  }
  std::vector<int64_t> pos(static_cast<size_t>(T));
  if (pos_obj.is_none()) {
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = t;
  } else {
    py::array p = checked(pos_obj, "positions", {DType::kI32, DType::kI64}, 1, 1);
    if (p.shape(0) != T)
      throw py::value_error("positions must have shape (" + std::to_string(T) + ",), got " + shape_str(p));
    for (int64_t t = 0; t < T; ++t)
      pos[size_t(t)] = has_dt(p, DType::kI32) ? static_cast<const int32_t*>(p.data())[t]
                                           : static_cast<const int64_t*>(p.data())[t];
  }
  std::vector<float> inv_freq(static_cast<size_t>(rot / 2));
  if (!inv_freq_obj.is_none()) {
    py::array f;
    const float* fp = optional_vec(inv_freq_obj, "inv_freq", rot / 2, f);
    std::copy(fp, fp + rot / 2, inv_freq.begin());
  } else {
    if (!(theta > 0)) throw py::value_error("theta must be > 0, got " + std::to_string(theta));
    // as Hugging Face: 1 / theta ** (arange(0, rot, 2) / rot), in float32
    for (int64_t i = 0; i < rot / 2; ++i)
      inv_freq[size_t(i)] = 1.0f / std::pow(float(theta), float(2 * i) / float(rot));
  }
  py::array_t<float> out = make_out(out_obj, shape_of(x));
  same_or_apart(out, x, "x");
  float* y = out.mutable_data();
  const KernelTable& t = table();
  py::gil_scoped_release nogil;
  if (y != cf32(x)) std::memcpy(y, cf32(x), size_t(T * H * D) * sizeof(float));
  t.rope(y, H * D, pos.data(), T, H, D, rot, inv_freq.data(), interleaved);
  return out;
}

using Unary = void (*)(const float*, float*, int64_t);
using Binary = void (*)(const float*, const float*, float*, int64_t);

py::array_t<float> unary(Unary f, const py::object& x_obj, const py::object& out_obj) {
  py::array x = checked(x_obj, "x", {DType::kF32}, 1, 32);
  py::array_t<float> out = make_out(out_obj, shape_of(x));
  same_or_apart(out, x, "x");
  float* y = out.mutable_data();
  py::gil_scoped_release nogil;
  f(cf32(x), y, x.size());
  return out;
}

py::array_t<float> binary(Binary f, const char* na, const char* nb, const py::object& a_obj,
                          const py::object& b_obj, const py::object& out_obj) {
  py::array a = checked(a_obj, na, {DType::kF32}, 1, 32);
  py::array b = checked(b_obj, nb, {DType::kF32}, 1, 32);
  if (shape_of(a) != shape_of(b))
    throw py::value_error(std::string(na) + " and " + nb + " must have the same shape (no broadcasting), got " +
                          shape_str(a) + " and " + shape_str(b));
  py::array_t<float> out = make_out(out_obj, shape_of(a));
  same_or_apart(out, a, na);
  same_or_apart(out, b, nb);
  float* y = out.mutable_data();
  py::gil_scoped_release nogil;
  f(cf32(a), cf32(b), y, a.size());
  return out;
}

py::array_t<float> softmax(Table table, const py::object& x_obj, const py::object& out_obj) {
  py::array x = checked(x_obj, "x", {DType::kF32}, 1, 32);
  const int64_t cols = x.shape(x.ndim() - 1), rows = x.size() / cols;
  py::array_t<float> out = make_out(out_obj, shape_of(x));
  same_or_apart(out, x, "x");
  float* y = out.mutable_data();
  const KernelTable& t = table();
  py::gil_scoped_release nogil;
  t.softmax(cf32(x), y, rows, cols);
  return out;
}

// logits[r, t] = -inf where bit t of bitmask row r is clear (a grammar's allowed tokens, 32 per
// int32 word, least significant bit first, as llguidance writes them); in place
void apply_token_bitmask(const py::object& logits_obj, const py::object& mask_obj) {
  py::array logits = checked(logits_obj, "logits", {DType::kF32}, 2, 2);
  py::array mask = checked(mask_obj, "bitmask", {DType::kI32}, 2, 2);
  if (!logits.writeable()) throw py::value_error("logits must be writeable (the mask is applied in place)");
  const int64_t rows = logits.shape(0), vocab = logits.shape(1), words = (vocab + 31) / 32;
  if (mask.shape(0) != rows || mask.shape(1) != words)
    throw py::value_error("bitmask must be (" + std::to_string(rows) + ", " + std::to_string(words) +
                          ") int32 for logits " + shape_str(logits) + ", got " + shape_str(mask));
  float* z = static_cast<float*>(logits.mutable_data());
  const uint32_t* bits = static_cast<const uint32_t*>(mask.data());
  py::gil_scoped_release nogil;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = z + r * vocab;
    const uint32_t* m = bits + r * words;
    for (int64_t w = 0; w < words; ++w) {
      const uint32_t word = m[w];
      if (word == 0xffffffffu) continue;
      float* z32 = row + w * 32;
      const int64_t end = std::min<int64_t>(32, vocab - w * 32);
      if (word == 0) {  // most words of a grammar's mask: nothing allowed
        for (int64_t b = 0; b < end; ++b) z32[b] = ninf;
        continue;
      }
      for (int64_t b = 0; b < end; ++b)
        if (!((word >> b) & 1u)) z32[b] = ninf;
    }
  }
}

}  // namespace

void register_kernels(py::module_& m, Table table, bool with_packed) {
  using namespace pybind11::literals;
  const py::object none = py::none();
  m.def("matmul", [table](const py::object& x, const py::object& w, const py::object& bias, const py::object& out) {
        return matmul(table, x, w, bias, out);
      }, "x"_a, "w"_a, "bias"_a = none, py::kw_only(), "out"_a = none,
      "y = x @ w.T (+ bias). x (M, K) float32; w (N, K) float32 or bfloat16, or a PackedWeight.\n\n"
      ">>> y = matmul(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))  # (2, 4)");
  m.def("attention", [table](const py::object& q, const py::object& k, const py::object& v, bool causal,
                             const py::object& scale, const py::object& out, int64_t window, float softcap) {
        return attention(table, q, k, v, causal, scale, out, window, softcap);
      }, "q"_a, "k"_a, "v"_a, py::kw_only(), "causal"_a = true, "scale"_a = none, "out"_a = none, "window"_a = 0,
      "softcap"_a = 0.0f,
      "softmax(q k^T * scale) v, fused. q (H, T, D), k/v (Hkv, S, D), H % Hkv == 0, T <= S;\n"
      "query t sits at position p = S - T + t and, when causal, sees keys 0..p; with a sliding window W > 0\n"
      "only keys p - W + 1..p; softcap > 0 caps each scaled score s to softcap * tanh(s / softcap). Returns (H, T, D).");
  m.def("rms_norm", [table](const py::object& x, const py::object& w, float eps, const py::object& out) {
        return rms_norm(table, x, w, eps, out);
      }, "x"_a, "weight"_a, "eps"_a = 1e-6f, py::kw_only(), "out"_a = none,
      "x / sqrt(mean(x^2) + eps) * weight over the last axis");
  m.def("layer_norm", [table](const py::object& x, const py::object& w, const py::object& b, float eps,
                              const py::object& out) { return layer_norm(table, x, w, b, eps, out); },
      "x"_a, "weight"_a, "bias"_a, "eps"_a = 1e-5f, py::kw_only(), "out"_a = none,
      "(x - mean) / sqrt(var + eps) * weight + bias over the last axis");
  m.def("q_quantize", [table](const py::object& w, const std::string& qtype, int64_t group_size) {
        return q_quantize(table, w, qtype, group_size);
      }, "w"_a, "qtype"_a, "group_size"_a = 32,
      "w (N, K) float32 -> (N, row_bytes) uint8 records of 'q8' or 'q4' groups (round to nearest)");
  m.def("q_dequantize", [table](const py::object& q, const std::string& qtype, int64_t K, int64_t group_size) {
        return q_dequantize(table, q, qtype, K, group_size);
      }, "q"_a, "qtype"_a, "K"_a, "group_size"_a = 32, "quantized records -> (N, K) float32");
  m.def("q_matmul", [table](const py::object& x, const py::object& q, const std::string& qtype, int64_t group_size,
                            const py::object& bias, const py::object& out) {
        return q_matmul(table, x, q, qtype, group_size, bias, out);
      }, "x"_a, "q"_a, "qtype"_a, "group_size"_a = 32, "bias"_a = py::none(), "out"_a = py::none(),
      "y = x @ W^T (+ bias) for a quantized W; x is quantized on the fly (q8: int16 per row, q4: int8 per 32)");
  m.def("rope", [table](const py::object& x, const py::object& positions, double theta, const py::object& inv_freq,
                        const py::object& rotary_dim, bool interleaved, const py::object& out) {
        return rope(table, x, positions, theta, inv_freq, rotary_dim, interleaved, out);
      }, "x"_a, "positions"_a = none, py::kw_only(), "theta"_a = 10000.0, "inv_freq"_a = none,
      "rotary_dim"_a = none, "interleaved"_a = false, "out"_a = none,
      "rotary embedding of x (T, H, D) or (T, D) at positions (T,) (default 0..T-1); Hugging Face\n"
      "rotate-half pairs (i, i + rot/2), or GPT-J pairs (2i, 2i+1) with interleaved=True. out=x is in place.");
  m.def("gelu_tanh", [table](const py::object& x, const py::object& out) { return unary(table().gelu_tanh, x, out); },
        "x"_a, py::kw_only(), "out"_a = none, "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))");
  m.def("silu_mul", [table](const py::object& g, const py::object& u, const py::object& out) {
        return binary(table().silu_mul, "gate", "up", g, u, out);
      }, "gate"_a, "up"_a, py::kw_only(), "out"_a = none, "silu(gate) * up (SwiGLU)");
  m.def("gelu_mul", [table](const py::object& g, const py::object& u, const py::object& out) {
        return binary(table().gelu_mul, "gate", "up", g, u, out);
      }, "gate"_a, "up"_a, py::kw_only(), "out"_a = none, "gelu_tanh(gate) * up (GeGLU)");
  m.def("softmax", [table](const py::object& x, const py::object& out) { return softmax(table, x, out); },
        "x"_a, py::kw_only(), "out"_a = none, "softmax over the last axis");
  m.def("add", [table](const py::object& a, const py::object& b, const py::object& out) {
        return binary(table().add, "a", "b", a, b, out);
      }, "a"_a, "b"_a, py::kw_only(), "out"_a = none, "a + b, same shapes");

  m.def("apply_token_bitmask", &apply_token_bitmask, "logits"_a, "bitmask"_a,
        "In place: logits (rows, vocab) float32 become -inf where the bitmask (rows, ceil(vocab / 32)) int32\n"
        "has a clear bit (bit t % 32 of word t / 32 of a row allows token t), as llguidance fills it.");

  if (!with_packed) return;
  py::class_<PackedWeight>(m, "PackedWeight",
                           "A weight (N, K) repacked once into the panels the current ISA's GEMM streams.\n\n"
                           ">>> pw = pack(w); y = matmul(x, pw)")
      .def(py::init<const py::object&>(), "w"_a)
      .def_property_readonly("shape", [](const PackedWeight& p) { return py::make_tuple(p.N(), p.K()); })
      .def_property_readonly("dtype", &PackedWeight::dtype)
      .def_property_readonly("isa", &PackedWeight::isa)
      .def_property_readonly("nbytes", &PackedWeight::nbytes)
      .def("__repr__", [](const PackedWeight& p) {
        return "PackedWeight(shape=(" + std::to_string(p.N()) + ", " + std::to_string(p.K()) + "), dtype=" +
               p.dtype() + ", isa=" + p.isa() + ")";
      });
  m.def("pack", [](const py::object& w) { return PackedWeight(w); }, "w"_a,
        "pack w (N, K) float32/bfloat16 for repeated matmul calls");
}

}  // namespace fastlm
