// scalar references: the oracles the tests hold the fast kernels to. plain loops, double
// accumulators, no threads, no SIMD; never used on a hot path.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/half.h"
#include "kernels/ggml_blocks.h"
#include "kernels/kernels.h"
#include "kernels/qformat.h"

namespace fastlm {
namespace ref {
namespace {

float load_weight(const void* w, DType t, int64_t i) {
  if (t == DType::kF32) return static_cast<const float*>(w)[i];
  uint32_t u = uint32_t(static_cast<const uint16_t*>(w)[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

void matmul(const float* x, int64_t M, int64_t K, const void* w, DType wtype, int64_t N,
            const float* bias, float* y) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(x[m * K + k]) * load_weight(w, wtype, n * K + k);
      y[m * N + n] = float(s);
    }
}

void attention(const AttentionArgs& a) {
  const int64_t G = a.H / a.Hkv;
  std::vector<double> s(size_t(a.S));
  for (int64_t h = 0; h < a.H; ++h) {
    const float* kh = a.k + (h / G) * a.kv_head_stride;
    const float* vh = a.v + (h / G) * a.kv_head_stride;
    for (int64_t t = 0; t < a.T; ++t) {
      const float* q = a.q + h * a.q_head_stride + t * a.q_row_stride;
      const int64_t n = a.causal ? a.S - a.T + t + 1 : a.S;
      const int64_t lo = a.causal && a.window > 0 ? std::max<int64_t>(0, n - a.window) : 0;  // the window's first key
      double mx = -INFINITY;
      for (int64_t j = lo; j < n; ++j) {
        double d = 0;
        for (int64_t i = 0; i < a.D; ++i) d += double(q[i]) * kh[j * a.D + i];
        s[j] = d * a.scale;
        if (a.softcap > 0) s[j] = a.softcap * std::tanh(s[j] / a.softcap);
        mx = std::max(mx, s[j]);
      }
      double total = 0;
      for (int64_t j = lo; j < n; ++j) total += (s[j] = std::exp(s[j] - mx));
      float* o = a.out + h * a.out_head_stride + t * a.out_row_stride;
      for (int64_t i = 0; i < a.D; ++i) {
        double acc = 0;
        for (int64_t j = lo; j < n; ++j) acc += s[j] * vh[j * a.D + i];
        o[i] = float(acc / total);
      }
    }
  }
}

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    double ss = 0;
    for (int64_t i = 0; i < cols; ++i) ss += double(xr[i]) * xr[i];
    double rs = 1.0 / std::sqrt(ss / double(cols) + eps);
    for (int64_t i = 0; i < cols; ++i) y[r * cols + i] = float(xr[i] * rs * (w ? w[i] : 1.0f));
  }
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows,
                int64_t cols, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < cols; ++i) mean += xr[i];
    mean /= double(cols);
    for (int64_t i = 0; i < cols; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= double(cols);
    double rs = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < cols; ++i)
      y[r * cols + i] = float((xr[i] - mean) * rs * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f));
  }
}

// bit-exact with the fast kernels: float32 arithmetic in the same order
void rope(float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D,
          int64_t rot_dim,
          const float* inv_freq, bool interleaved) {
  const int64_t half = rot_dim / 2;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* xh = x + t * row_stride + h * D;
      for (int64_t i = 0; i < half; ++i) {
        double angle = double(float(pos[t]) * inv_freq[i]);
        double c = std::cos(angle), s = std::sin(angle);
        int64_t i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        double a = xh[i0], b = xh[i1];
        xh[i0] = float(a * c - b * s);
        xh[i1] = float(b * c + a * s);
      }
    }
}

void gelu_tanh(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    // 0.5 v (1 + tanh(u)) == v / (1 + e^{-2u}), written without the cancellation for v << 0
    double v = x[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    y[i] = float(v / (1.0 + std::exp(-2.0 * u)));
  }
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i];
    y[i] = float(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void gelu_mul(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double v = gate[i], u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    y[i] = float(v / (1.0 + std::exp(-2.0 * u)) * up[i]);
  }
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    double mx = -INFINITY, total = 0;
    for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, double(xr[i]));
    for (int64_t i = 0; i < cols; ++i) total += std::exp(xr[i] - mx);
    for (int64_t i = 0; i < cols; ++i) y[r * cols + i] = float(std::exp(xr[i] - mx) / total);
  }
}

void add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

}  // namespace ref
}  // namespace fastlm

namespace fastlm {
namespace ref {

// the references behind the same interface as an ISA's table (unpacked weights only)
void pack_weight(const void*, DType, int64_t, int64_t, void*) {}
void packed_row(const void*, DType, int64_t, int64_t, int64_t, float*) {}
size_t matmul_workspace(int64_t, int64_t, int64_t, bool) { return 0; }
void matmul(const MatmulArgs& a) { matmul(a.x, a.M, a.K, a.w, a.wtype, a.N, a.bias, a.y); }

// element k of a record: its quant and its group's (scale, minimum)
static void q_element(const QWeight& w, const uint8_t* rec, int64_t k, int* q, float* d, float* m) {
  const int64_t kp = q_padded_k(w.type, w.K, w.G), groups = kp / w.G, g = k / w.G;
  uint16_t h;
  if (w.type == QType::kQ8) {
    *q = int8_t(rec[k]);
    std::memcpy(&h, rec + kp + 2 * g, 2);
    *d = half_to_float(h);
    *m = 0.0f;
    return;
  }
  const uint8_t byte = rec[(k / 64) * 32 + k % 32];
  *q = (k / 32) % 2 ? byte >> 4 : byte & 15;
  std::memcpy(&h, rec + kp / 2 + 2 * g, 2);
  *d = half_to_float(h);
  std::memcpy(&h, rec + kp / 2 + 2 * groups + 2 * g, 2);
  *m = half_to_float(h);
}

// the quantizer has one implementation (qformat.h), the same bits on every ISA: its independent
// check is the NumPy twin in fastlm/quant/rtn.py
void q_quantize(const float* w, int64_t N, int64_t K, QType type, int64_t G, uint8_t* out) {
  const int64_t rb = q_row_bytes(type, K, G);
  for (int64_t n = 0; n < N; ++n) q_quantize_row(w + n * K, K, type, G, out + n * rb);
}

void q_dequantize_row(const QWeight& w, int64_t n, float* out) {
  const uint8_t* rec = w.data + n * q_row_bytes(w.type, w.K, w.G);
  if (q_is_ggml(w.type)) return ggml::dequantize_row(w.type, rec, w.K, out);  // its oracle is gguf.quants
  for (int64_t k = 0; k < w.K; ++k) {
    int q;
    float d, m;
    q_element(w, rec, k, &q, &d, &m);
    out[k] = d * float(q) + m;
  }
}

void q_matmul(const QMatmulArgs& a) {
  const QWeight& w0 = a.parts[0];
  const int64_t K = a.K;
  std::vector<double> xq(static_cast<size_t>(K));
  std::vector<float> wrow(static_cast<size_t>(K));
  for (int64_t m = 0; m < a.M; ++m) {
    const float* x = a.x + m * K;
    // the activations as the kernels quantize them
    if (w0.type == QType::kQ8) {
      float amax = 0.0f;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[k]));
      const float s = amax / 32767.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      for (int64_t k = 0; k < K; ++k)
        xq[size_t(k)] = double(s) * std::nearbyint(std::min(32767.0f, std::max(-32767.0f, x[k] * inv)));
    } else {
      for (int64_t k0 = 0; k0 < K; k0 += 32) {
        const int64_t k1 = std::min(K, k0 + 32);
        float amax = 0.0f;
        for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(x[k]));
        const float s = amax / 127.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
        for (int64_t k = k0; k < k1; ++k)
          xq[size_t(k)] = double(s) * std::nearbyint(std::min(127.0f, std::max(-127.0f, x[k] * inv)));
      }
    }
    int64_t off = 0;
    for (int p = 0; p < a.n_parts; ++p) {
      const QWeight& w = a.parts[p];
      for (int64_t n = 0; n < w.N; ++n) {
        q_dequantize_row(w, n, wrow.data());
        double s = w.bias ? w.bias[n] : 0.0;
        for (int64_t k = 0; k < K; ++k) s += xq[size_t(k)] * wrow[size_t(k)];
        a.y[m * a.ldy + off + n] = float(s);
      }
      off += w.N;
    }
  }
}

const KernelTable& kernel_table() {
  static const KernelTable table = FASTLM_KERNEL_TABLE("ref", 16);
  return table;
}

}  // namespace ref
}  // namespace fastlm
