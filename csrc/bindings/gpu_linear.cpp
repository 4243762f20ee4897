// GPU bindings: SGEMM, tensor-core bf16 / f16 and int8 GEMM, GEMV (see gpu_arrays.h).
#include "bindings/gpu_arrays.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

void def_linear_kernels(py::module_& m) {
  m.def("matmul", [](const py::object& x, const py::object& w, const py::object& bias, const py::object& out) {
    need_device();
    View xv = typed(x, "x", {DType::kF32}), wv = typed(w, "w", {DType::kF32});
    if (xv.shape.size() != 2 || wv.shape.size() != 2 || xv.shape[1] != wv.shape[1])
      throw py::value_error("matmul takes x (M, K) and w (N, K)");
    const int64_t M = xv.shape[0], K = xv.shape[1], N = wv.shape[0];
    std::vector<View> keep;
    const float* bp = optional_f32(bias, "bias", N, keep);
    void* yp;
    py::object y = output(out, {M, N}, DType::kF32, &yp);
    sgemm(static_cast<float*>(xv.ptr), static_cast<float*>(wv.ptr), bp, static_cast<float*>(yp), M, N, K);
    return y;
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
    need_device();
    View xv = typed(x, "x", {DType::kF32}), wv = typed(w, "w", {DType::kF32, DType::kBF16});
    if (xv.shape.size() != 2 || wv.shape.size() != 2 || xv.shape[1] != wv.shape[1])
      throw py::value_error("gemv takes x (M, K) and w (N, K)");
    const int64_t M = xv.shape[0], K = xv.shape[1], N = wv.shape[0];
    std::vector<View> keep;
    const float* bp = optional_f32(bias, "bias", N, keep);
    void* yp;
    py::object y = output(out, {M, N}, DType::kF32, &yp);
    gemv(static_cast<float*>(xv.ptr), wv.ptr, wv.dtype, bp, static_cast<float*>(yp), M, N, K);
    return y;
  }, "x"_a, "w"_a, "bias"_a = py::none(), py::kw_only(), "out"_a = py::none(),
     "y = x @ w.T (+ bias) for a few rows of x (decode): fp32 x, fp32 or bf16 w, w read once");
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
