#include "bindings/gpu_arrays.h"

#include <cstring>
#include <stdexcept>

#include "base/half.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

namespace {

// DLPack (v0.8 ABI, the unversioned "dltensor" capsule every producer still offers)
struct DLDevice_ {
  int32_t device_type, device_id;
};
struct DLDataType_ {
  uint8_t code, bits;
  uint16_t lanes;
};
struct DLTensor_ {
  void* data;
  DLDevice_ device;
  int32_t ndim;
  DLDataType_ dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor_ {
  DLTensor_ dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor_*);
};

void check_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t item,
                      const char* name) {
  int64_t want = item;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] > 1 && strides[i] != want)
      throw py::value_error(std::string(name) + " must be C-contiguous (make it .contiguous())");
    want *= shape[i];
  }
}

DType dtype_of_typestr(const std::string& ts, const char* name) {
  if (ts == "<f4") return DType::kF32;
  if (ts == "<f2") return DType::kF16;
  if (ts == "|i1") return DType::kI8;
  if (ts == "<i4") return DType::kI32;
  if (ts == "<V2" || ts == "|V2") return DType::kBF16;  // ml_dtypes' bfloat16 in NumPy
  throw py::type_error(std::string(name) + " has an unsupported dtype (typestr " + ts + ")");
}


void dlpack_deleter(DLManagedTensor_* t) {
  delete static_cast<std::pair<std::shared_ptr<DeviceArray>, std::vector<int64_t>>*>(t->manager_ctx);
  delete t;
}

}  // namespace

View view_of(const py::object& obj, const char* name) {
  View v;
  v.keep = obj;
  if (py::isinstance<DeviceArray>(obj)) {
    auto& d = obj.cast<DeviceArray&>();
    v.ptr = d.data();
    v.shape = d.shape();
    v.dtype = d.dtype();
  } else if (py::hasattr(obj, kInterface)) {
    py::dict ai = obj.attr(kInterface);
    v.dtype = dtype_of_typestr(ai["typestr"].cast<std::string>(), name);
    v.shape = ai["shape"].cast<std::vector<int64_t>>();
    if (ai.contains("strides") && !ai["strides"].is_none())
      check_contiguous(v.shape, ai["strides"].cast<std::vector<int64_t>>(), int64_t(dtype_size(v.dtype)), name);
    v.ptr = reinterpret_cast<void*>(ai["data"].cast<py::tuple>()[0].cast<uintptr_t>());
  } else if (py::hasattr(obj, "__dlpack__")) {
    py::capsule cap = obj.attr("__dlpack__")();
    if (std::strcmp(cap.name(), "dltensor") != 0) throw py::type_error(std::string(name) + ": not a DLPack tensor capsule");
    auto* mt = static_cast<DLManagedTensor_*>(cap.get_pointer());
    const DLTensor_& t = mt->dl_tensor;
    if (t.device.device_type != kDLDevice)
      throw py::type_error(std::string(name) + " is on the wrong device (DLPack device type " +
                           std::to_string(t.device.device_type) + ", this backend takes " + std::to_string(kDLDevice) + ")");
    const auto& dt = t.dtype;
    if (dt.lanes != 1) throw py::type_error(std::string(name) + ": vector dtypes are not supported");
    if (dt.code == 2 && dt.bits == 32) v.dtype = DType::kF32;
    else if (dt.code == 2 && dt.bits == 16) v.dtype = DType::kF16;
    else if (dt.code == 4 && dt.bits == 16) v.dtype = DType::kBF16;
    else if (dt.code == 0 && dt.bits == 8) v.dtype = DType::kI8;
    else if (dt.code == 0 && dt.bits == 32) v.dtype = DType::kI32;
    else throw py::type_error(std::string(name) + " has an unsupported dtype (DLPack code " + std::to_string(dt.code) +
                              ", " + std::to_string(dt.bits) + " bits)");
    v.shape.assign(t.shape, t.shape + t.ndim);
    if (t.strides) {
      std::vector<int64_t> bytes(t.strides, t.strides + t.ndim);
      for (auto& s : bytes) s *= int64_t(dtype_size(v.dtype));
      check_contiguous(v.shape, bytes, int64_t(dtype_size(v.dtype)), name);
    }
    v.ptr = static_cast<char*>(t.data) + t.byte_offset;
    v.keep = cap;  // the capsule frees the tensor when dropped
  } else {
    throw py::type_error(std::string(name) + " must be a device array (a fastlm DeviceArray, or an object with " +
                         kInterface + " or __dlpack__), got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  for (int64_t d : v.shape) v.size *= d;
  if (v.size == 0) throw py::value_error(std::string(name) + " must not be empty");
  return v;
}

DType dtype_from_name(const std::string& s) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8, DType::kI32})
    if (s == dtype_name(t)) return t;
  throw py::value_error("unsupported dtype " + s + " (float32, bfloat16, float16, int8, int32)");
}

void need_device() { require_device(); }

GemmKernel gemm_kernel(const std::string& name) {
  if (name == "auto") return GemmKernel::kAuto;
  if (name == "mma") return GemmKernel::kMma;
  if (name == "wgmma") return GemmKernel::kWgmma;
  throw py::value_error("kernel must be 'auto', 'mma' or 'wgmma', got '" + name + "'");
}

View typed(const py::object& obj, const char* name, std::initializer_list<DType> ok) {
  View v = view_of(obj, name);
  for (DType t : ok)
    if (v.dtype == t) return v;
  std::string want;
  for (DType t : ok) want += std::string(want.empty() ? "" : " or ") + dtype_name(t);
  throw py::type_error(std::string(name) + " must be " + want + ", got " + dtype_name(v.dtype));
}

py::object output(const py::object& out, const std::vector<int64_t>& shape, DType dt, void** ptr) {
  if (out.is_none()) {
    auto a = std::make_shared<DeviceArray>(shape, dt);
    *ptr = a->data();
    return py::cast(a);
  }
  View v = view_of(out, "out");
  if (v.shape != shape) throw py::value_error("out has the wrong shape");
  if (v.dtype != dt) throw py::type_error(std::string("out must be ") + dtype_name(dt));
  *ptr = v.ptr;
  return out;
}

View rows_of(const py::object& obj, const char* name, int64_t& rows, int64_t& cols) {
  View v = typed(obj, name, {DType::kF32});
  if (v.shape.empty()) throw py::value_error(std::string(name) + " must have at least one dimension");
  cols = v.shape.back();
  rows = v.size / cols;
  return v;
}

const float* optional_f32(const py::object& obj, const char* name, int64_t n, std::vector<View>& keep) {
  if (obj.is_none()) return nullptr;
  keep.push_back(typed(obj, name, {DType::kF32}));
  if (keep.back().size != n) throw py::value_error(std::string(name) + " must have " + std::to_string(n) + " elements");
  return static_cast<const float*>(keep.back().ptr);
}

py::capsule to_dlpack(const std::shared_ptr<DeviceArray>& a) {
  auto* ctx = new std::pair<std::shared_ptr<DeviceArray>, std::vector<int64_t>>(a, a->shape());
  auto* t = new DLManagedTensor_{};
  t->dl_tensor.data = a->data();
  t->dl_tensor.device = {kDLDevice, 0};
  t->dl_tensor.ndim = int32_t(a->shape().size());
  const DType d = a->dtype();
  t->dl_tensor.dtype = {uint8_t(d == DType::kBF16 ? 4 : d == DType::kF32 || d == DType::kF16 ? 2 : 0),
                        uint8_t(dtype_size(d) * 8), 1};
  t->dl_tensor.shape = ctx->second.data();
  t->dl_tensor.strides = nullptr;
  t->dl_tensor.byte_offset = 0;
  t->manager_ctx = ctx;
  t->deleter = dlpack_deleter;
  return py::capsule(t, "dltensor", [](PyObject* cap) {
    // a consumer renames the capsule "used_dltensor" and owns the tensor; otherwise free it here
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* mt = static_cast<DLManagedTensor_*>(PyCapsule_GetPointer(cap, "dltensor"));
      mt->deleter(mt);
    }
  });
}

// host <-> device conversions of DeviceArray
std::shared_ptr<DeviceArray> from_numpy(const py::array& a, const std::string& dtype) {
  need_device();
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const std::string src = py::str(a.dtype()).cast<std::string>();
  const DType want = dtype.empty() ? (src == "bfloat16" ? DType::kBF16 : dtype_from_name(src == "float64" ? "float32" : src))
                                   : dtype_from_name(dtype);
  auto d = std::make_shared<DeviceArray>(shape, want);
  if (want == DType::kBF16 && src != "bfloat16") {  // float32 -> bfloat16, round to nearest even
    py::array_t<float, py::array::c_style | py::array::forcecast> f(a);
    std::vector<uint16_t> h(d->size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = float_to_bf16(f.data()[i]);
    copy_to_device(d->data(), h.data(), d->nbytes());
    return d;
  }
  py::array c;
  switch (want) {
    case DType::kF32: c = py::array_t<float, py::array::c_style | py::array::forcecast>(a); break;
    case DType::kF16: c = py::module_::import("numpy").attr("ascontiguousarray")(a, "dtype"_a = "float16"); break;
    case DType::kI8: c = py::array_t<int8_t, py::array::c_style | py::array::forcecast>(a); break;
    case DType::kI32: c = py::array_t<int32_t, py::array::c_style | py::array::forcecast>(a); break;
    case DType::kBF16: c = py::module_::import("numpy").attr("ascontiguousarray")(a); break;
  }
  copy_to_device(d->data(), c.data(), d->nbytes());
  return d;
}

py::array to_numpy(const DeviceArray& d) {
  std::vector<py::ssize_t> shape(d.shape().begin(), d.shape().end());
  if (d.dtype() == DType::kBF16) {  // widened to float32: NumPy has no bfloat16 of its own
    std::vector<uint16_t> h(d.size());
    copy_to_host(h.data(), d.data(), d.nbytes());
    py::array_t<float> out(shape);
    float* o = out.mutable_data();
    for (size_t i = 0; i < h.size(); ++i) o[i] = bf16_to_float(h[i]);
    return out;
  }
  py::dtype dt = d.dtype() == DType::kF32   ? py::dtype::of<float>()
                 : d.dtype() == DType::kI8  ? py::dtype::of<int8_t>()
                 : d.dtype() == DType::kI32 ? py::dtype::of<int32_t>()
                                            : py::dtype("float16");
  py::array out(dt, shape);
  copy_to_host(out.mutable_data(), d.data(), d.nbytes());
  return out;
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
