// GPU bindings: SGEMM, tensor-core bf16 / f16 and int8 GEMM, GEMV (see gpu_arrays.h).
#include "bindings/gpu_arrays.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

namespace {

// the arguments of y = x @ w.T (+ bias) on float32 x (M, K) and w (N, K) of `w_types`, checked
struct LinearCall {
  View x, w;
  int64_t M = 0, N = 0, K = 0;
  std::vector<View> keep;
  const float* bias = nullptr;
  py::object y;
  void* yp = nullptr;
};

LinearCall linear_call(const char* what, const py::object& x, const py::object& w, const py::object& bias,
                       const py::object& out, std::initializer_list<DType> w_types) {
  need_device();
  LinearCall c;
  c.x = typed(x, "x", {DType::kF32});
  c.w = typed(w, "w", w_types);
  if (c.x.shape.size() != 2 || c.w.shape.size() != 2 || c.x.shape[1] != c.w.shape[1])
    throw py::value_error(std::string(what) + " takes x (M, K) and w (N, K)");
  c.M = c.x.shape[0], c.K = c.x.shape[1], c.N = c.w.shape[0];
  c.bias = optional_f32(bias, "bias", c.N, c.keep);
  c.y = output(out, {c.M, c.N}, DType::kF32, &c.yp);
  return c;
}

}  // namespace

void def_linear_kernels(py::module_& m) {
  m.def("matmul", [](const py::object& x, const py::object& w, const py::object& bias, const py::object& out) {
    LinearCall c = linear_call("matmul", x, w, bias, out, {DType::kF32});
    sgemm(static_cast<float*>(c.x.ptr), static_cast<float*>(c.w.ptr), c.bias, static_cast<float*>(c.yp), c.M, c.N,
          c.K);
    return c.y;
  }, "x"_a, "w"_a, "bias"_a = py::none(), py::kw_only(), "out"_a = py::none(),
     "y = x @ w.T (+ bias), fp32 on CUDA cores (no TF32)");
  m.def("gemm", [](const py::object& x, const py::object& w, const py::object& bias, const std::string& out_dtype,
                   const std::string& kernel, const py::object& out) {
    need_device();
    View xv = typed(x, "x", {DType::kBF16, DType::kF16}), wv = typed(w, "w", {DType::kBF16, DType::kF16});
    if (xv.dtype != wv.dtype) throw py::type_error("x and w must have the same dtype");
    if (xv.shape.size() != 2 || wv.shape.size() != 2 || xv.shape[1] != wv.shape[1])
      throw py::value_error("gemm takes x (M, K) and w (N, K)");
    const int64_t M = xv.shape[0], K = xv.shape[1], N = wv.shape[0];
    if (K % 8) throw py::value_error("gemm needs K to be a multiple of 8, got " + std::to_string(K));
    std::vector<View> keep;
    const float* bp = optional_f32(bias, "bias", N, keep);
    const DType od = out_dtype.empty() ? DType::kF32 : dtype_from_name(out_dtype);
    if (od != DType::kF32 && od != xv.dtype) throw py::value_error("gemm writes float32 or the input dtype");
    void* yp;
    py::object y = output(out, {M, N}, od, &yp);
    const GemmKernel gk = gemm_kernel(kernel);
    gemm_tc(xv.ptr, wv.ptr, xv.dtype, bp, yp, od, M, N, K, gk);
    return y;
  }, "x"_a, "w"_a, "bias"_a = py::none(), "out_dtype"_a = "float32", py::kw_only(), "kernel"_a = "auto",
     "out"_a = py::none(),
     "y = x @ w.T (+ bias) on tensor cores: bf16 / f16 inputs, fp32 accumulation. kernel: 'mma' (mma.sync, "
     "sm_80+), 'wgmma' (Hopper warpgroup MMA, bf16, a build for sm_90a), 'auto' (wgmma where it runs, else mma)");
  m.attr("wgmma_built") = wgmma_built();
  m.def("int8_matmul", [](const py::object& x, const py::object& w, const py::object& sx, const py::object& sw,
                          const std::string& kernel, const py::object& out) {
    const GemmKernel gk = gemm_kernel(kernel);
    need_device();
    View xv = typed(x, "x", {DType::kI8}), wv = typed(w, "w", {DType::kI8});
    if (xv.shape.size() != 2 || wv.shape.size() != 2 || xv.shape[1] != wv.shape[1])
      throw py::value_error("int8_matmul takes x (M, K) and w (N, K)");
    const int64_t M = xv.shape[0], K = xv.shape[1], N = wv.shape[0];
    if (K % 16) throw py::value_error("int8_matmul needs K to be a multiple of 16, got " + std::to_string(K));
    if (sx.is_none() != sw.is_none()) throw py::value_error("give both scales (x_scale and w_scale) or neither");
    std::vector<View> keep;
    const float* sxp = optional_f32(sx, "x_scale", M, keep);
    const float* swp = optional_f32(sw, "w_scale", N, keep);
    const DType od = sxp ? DType::kF32 : DType::kI32;
    void* yp;
    py::object y = output(out, {M, N}, od, &yp);
    gemm_s8(static_cast<int8_t*>(xv.ptr), static_cast<int8_t*>(wv.ptr), sxp, swp, yp, od, M, N, K, gk);
    return y;
  }, "x"_a, "w"_a, "x_scale"_a = py::none(), "w_scale"_a = py::none(), py::kw_only(), "kernel"_a = "auto",
     "out"_a = py::none(),
     "int8 tensor cores: int32 x @ w.T, or float32 scaled by x_scale[m] * w_scale[n]. kernel: 'mma' (mma.sync), "
     "'wgmma' (Hopper), or 'auto' (wgmma on a Hopper GPU once it has matched mma.sync there)");
  m.def("gemv", [](const py::object& x, const py::object& w, const py::object& bias, const py::object& out) {
    LinearCall c = linear_call("gemv", x, w, bias, out, {DType::kF32, DType::kBF16});
    gemv(static_cast<float*>(c.x.ptr), c.w.ptr, c.w.dtype, c.bias, static_cast<float*>(c.yp), c.M, c.N, c.K);
    return c.y;
  }, "x"_a, "w"_a, "bias"_a = py::none(), py::kw_only(), "out"_a = py::none(),
     "y = x @ w.T (+ bias) for a few rows of x (decode): fp32 x, fp32 or bf16 w, w read once");
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
