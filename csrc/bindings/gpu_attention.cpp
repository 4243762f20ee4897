// GPU bindings: rope, split-KV attention, FlashAttention-2 (see gpu_arrays.h).
#include "bindings/gpu_arrays.h"

namespace fastlm {
namespace FASTLM_GPU_NS {
using namespace pybind11::literals;

void def_attention_kernels(py::module_& m) {
  m.def("rope", [](const py::object& x, const py::object& pos, const py::object& inv_freq, bool interleaved) {
    need_device();
    View xv = typed(x, "x", {DType::kF32}), pv = view_of(pos, "positions"), fv = typed(inv_freq, "inv_freq", {DType::kF32});
    if (xv.shape.size() != 3) throw py::value_error("rope takes x (T, heads, head_dim)");
    if (pv.size != xv.shape[0] || pv.shape.size() != 1 || pv.dtype != DType::kI32)
      throw py::value_error("positions must be int32 of shape (T,)");
    const int64_t T = xv.shape[0], H = xv.shape[1], D = xv.shape[2], rot = 2 * fv.size;
    if (rot > D) throw py::value_error("inv_freq longer than head_dim / 2");
    rope(static_cast<float*>(xv.ptr), T, H, D, H * D, static_cast<const int32_t*>(pv.ptr), static_cast<float*>(fv.ptr),
         rot, interleaved);
    return x;
  }, "x"_a, "positions"_a, "inv_freq"_a, "interleaved"_a = false, "rotary embedding in place on x (T, heads, head_dim)");
  m.def("attention", [](const py::object& q, const py::object& k, const py::object& v, bool causal, float scale,
                        const py::object& out) {
    need_device();
    View qv = typed(q, "q", {DType::kF32}), kv = typed(k, "k", {DType::kF32}), vv = typed(v, "v", {DType::kF32});
    if (qv.shape.size() != 3 || kv.shape.size() != 3 || kv.shape != vv.shape || qv.shape[2] != kv.shape[2])
      throw py::value_error("attention takes q (T, H, D), k and v (S, Hkv, D)");
    const int64_t T = qv.shape[0], H = qv.shape[1], D = qv.shape[2], S = kv.shape[0], Hkv = kv.shape[1];
    if (H % Hkv) throw py::value_error("heads must be a multiple of kv heads");
    if (causal && T > S) throw py::value_error("causal attention needs T <= S");
    if (D > 256) throw py::value_error("head_dim above 256");
    if (scale <= 0) scale = 1.0f / std::sqrt(float(D));
    void* yp;
    py::object y = output(out, qv.shape, DType::kF32, &yp);
    // the split-KV workspace is kept between calls (which hold the GIL: one at a time), so a call
    // neither allocates nor waits; a larger one replaces it (cudaFree waits for the device)
    static Buffer ws;
    const size_t wsz = attention_workspace(T, H, D, S) * 4;
    if (ws.bytes() < wsz) ws = Buffer(wsz);
    attention(static_cast<float*>(qv.ptr), H * D, static_cast<float*>(kv.ptr), static_cast<float*>(vv.ptr), Hkv * D,
              static_cast<float*>(yp), T, S, H, Hkv, D, scale, causal, wsz ? ws.f() : nullptr);
    return y;
  }, "q"_a, "k"_a, "v"_a, "causal"_a = true, "scale"_a = 0.0f, py::kw_only(), "out"_a = py::none(),
     "fp32 attention (split-KV): q (T, H, D), k / v (S, Hkv, D); query i sees keys <= S - T + i when causal");
  m.def("flash_attention", [](const py::object& q, const py::object& k, const py::object& v, bool causal, float scale,
                              int block_rows, const py::object& out) {
    need_device();
    View qv = typed(q, "q", {DType::kBF16, DType::kF16});
    View kv = typed(k, "k", {qv.dtype}), vv = typed(v, "v", {qv.dtype});
    if (qv.shape.size() != 3 || kv.shape.size() != 3 || kv.shape != vv.shape || qv.shape[2] != kv.shape[2])
      throw py::value_error("flash_attention takes q (T, H, D), k and v (S, Hkv, D)");
    const int64_t T = qv.shape[0], H = qv.shape[1], D = qv.shape[2], S = kv.shape[0], Hkv = kv.shape[1];
    if (H % Hkv) throw py::value_error("heads must be a multiple of kv heads");
    if (causal && T > S) throw py::value_error("causal attention needs T <= S");
    if (D != 64 && D != 128) throw py::value_error("flash_attention supports head_dim 64 or 128, got " + std::to_string(D));
    if (scale <= 0) scale = 1.0f / std::sqrt(float(D));
    void* yp;
    py::object y = output(out, qv.shape, qv.dtype, &yp);
    if (block_rows != 0 && block_rows != 64 && block_rows != 128)
      throw py::value_error("block_rows must be 64, 128 or 0 (chosen by T), got " + std::to_string(block_rows));
    flash_attention(qv.ptr, H * D, kv.ptr, vv.ptr, Hkv * D, yp, qv.dtype, qv.dtype, T, S, H, Hkv, D, scale, causal,
                    block_rows);
    return y;
  }, "q"_a, "k"_a, "v"_a, "causal"_a = true, "scale"_a = 0.0f, py::kw_only(), "block_rows"_a = 0,
     "out"_a = py::none(),
     "FlashAttention-2 on tensor cores (bf16 / f16): q (T, H, D), k / v (S, Hkv, D), D 64 or 128; block_rows: "
     "queries per block, 64 (16 a warp) or 128 (32 a warp), 0 to choose by T");
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
