#include "bindings/arrays.h"

#include <cstdlib>
#include <new>
#include <sstream>

namespace fastlm {

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i) << (a.ndim() == 1 ? "," : "");
  s << ")";
  return s.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

bool is_bf16(const py::array& a) {
  return a.dtype().itemsize() == 2 && py::str(a.dtype()).cast<std::string>() == "bfloat16";
}

bool has_dt(const py::array& a, DType t) {
  switch (t) {
    case DType::kF32: return a.dtype().is(py::dtype::of<float>());
    case DType::kBF16: return is_bf16(a);
    case DType::kI8: return a.dtype().is(py::dtype::of<int8_t>());
    case DType::kU8: return a.dtype().is(py::dtype::of<uint8_t>());
    case DType::kI32: return a.dtype().is(py::dtype::of<int32_t>());
    case DType::kI64: return a.dtype().is(py::dtype::of<int64_t>());
  }
  return false;
}

// the array behind `obj`, checked: a NumPy array of one of `dts`, C-contiguous, non-empty, with
// a rank in [min_ndim, max_ndim]
py::array checked(const py::object& obj, const char* name, std::initializer_list<DType> dts, int min_ndim,
                  int max_ndim) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  bool ok = false;
  std::string want;
  for (DType t : dts) {
    ok = ok || has_dt(a, t);
    want += std::string(want.empty() ? "" : " or ") + dtype_name(t);
  }
  if (!ok) throw py::type_error(std::string(name) + " must have dtype " + want + ", got " + dtype_str(a));
  if (a.ndim() < min_ndim || a.ndim() > max_ndim) {
    std::ostringstream s;
    s << name << " must have " << min_ndim;
    if (max_ndim != min_ndim) s << (max_ndim > 8 ? " or more" : " to " + std::to_string(max_ndim));
    s << " dimension" << (min_ndim == 1 && max_ndim == 1 ? "" : "s") << ", got shape " << shape_str(a);
    throw py::value_error(s.str());
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous (got a strided view of shape " +
                          shape_str(a) + "; use numpy.ascontiguousarray)");
  }
  if (a.size() == 0) throw py::value_error(std::string(name) + " must not be empty, got shape " + shape_str(a));
  return a;
}

bool overlaps(const py::array& a, const py::array& b) {
  auto lo_a = reinterpret_cast<uintptr_t>(a.data()), lo_b = reinterpret_cast<uintptr_t>(b.data());
  return lo_a < lo_b + size_t(b.nbytes()) && lo_b < lo_a + size_t(a.nbytes());
}

// `out` if given (checked: float32, C-contiguous, writeable, the expected shape), else a new array
py::array_t<float> make_out(const py::object& out, const std::vector<py::ssize_t>& shape) {
  if (out.is_none()) return py::array_t<float>(shape);
  py::array o = checked(out, "out", {DType::kF32}, 1, 32);
  std::vector<py::ssize_t> got(o.shape(), o.shape() + o.ndim());
  if (got != shape) {
    py::array_t<float> tmp(shape);
    throw py::value_error("out must have shape " + shape_str(tmp) + ", got " + shape_str(o));
  }
  if (!o.writeable()) throw py::value_error("out must be writeable");
  return py::reinterpret_borrow<py::array_t<float>>(o);
}

void no_alias(const py::array& out, const py::array& in, const char* name) {
  if (in && overlaps(out, in)) throw py::value_error(std::string("out must not overlap ") + name);
}

void same_or_apart(const py::array& out, const py::array& in, const char* name) {
  if (!in || !overlaps(out, in)) return;
  if (out.data() == in.data() && out.nbytes() == in.nbytes()) return;  // in place, element for element
  throw py::value_error(std::string("out must be ") + name + " itself (in place) or not overlap it at all");
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

const float* cf32(const py::array& a) { return static_cast<const float*>(a.data()); }

// a per-thread scratch buffer, 64-byte aligned, that only grows
void* workspace(size_t bytes) {
  struct Buffer {
    void* p = nullptr;
    size_t n = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (bytes > buf.n) {
    std::free(buf.p);
    size_t n = (bytes + 63) / 64 * 64;
    buf.p = std::aligned_alloc(64, n);
    if (!buf.p) {
      buf.n = 0;
      throw std::bad_alloc();
    }
    buf.n = n;
  }
  return buf.p;
}

const float* optional_vec(const py::object& obj, const char* name, py::ssize_t n, py::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = checked(obj, name, {DType::kF32}, 1, 1);
  if (keep.shape(0) != n) {
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(n) + ",), got " +
                          shape_str(keep));
  }
  return cf32(keep);
}

QType qtype_of(const std::string& name) {
  if (name == "q8") return QType::kQ8;
  if (name == "q4") return QType::kQ4;
  for (int t = int(QType::kQ5_0); t <= int(QType::kIQ4_XS); ++t)
    if (name == ggml_type_info(QType(t)).name) return QType(t);
  throw py::value_error("quantized type must be 'q8', 'q4' or a GGUF block type (q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, "
                        "q6_k, iq4_nl, iq4_xs), got '" + name + "'");
}

QWeight qweight_of(const py::object& obj, const std::string& qtype, int64_t K, int64_t G, py::array& keep) {
  const QType t = qtype_of(qtype);
  if (K < 1) throw py::value_error("K must be positive, got " + std::to_string(K));
  const GgmlTypeInfo g = ggml_type_info(t);
  if (g.qk > 0) {  // a GGUF block type: rows of K / qk blocks, G is the block
    if (G != 0 && G != g.qk)
      throw py::value_error(qtype + " blocks hold " + std::to_string(g.qk) + " elements, got group size " + std::to_string(G));
    if (K % g.qk)
      throw py::value_error("a " + qtype + " weight needs K a multiple of " + std::to_string(g.qk) + ", got " + std::to_string(K));
    G = g.qk;
  } else if (G != 32 && G != 64 && G != 128) {
    throw py::value_error("group size must be 32, 64 or 128, got " + std::to_string(G));
  }
  keep = checked(obj, "quantized weight", {DType::kU8}, 2, 2);
  const int64_t rb = q_row_bytes(t, K, G);
  if (keep.shape(1) != rb)
    throw py::value_error("a " + qtype + " weight with K=" + std::to_string(K) + " in groups of " + std::to_string(G) +
                          " has rows of " + std::to_string(rb) + " bytes, got shape " + shape_str(keep));
  return QWeight{static_cast<const uint8_t*>(keep.data()), t, keep.shape(0), K, G, nullptr};
}

}  // namespace fastlm
