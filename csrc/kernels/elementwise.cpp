// the small ops of a decoder: rope, gelu (tanh form), silu * mul (SwiGLU), softmax, add.
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/isa.h"
#include "base/threadpool.h"

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task: below this a thread wake costs more

template <typename F>
void map_elements(int64_t n, F&& f) {  // f(i, lanes) on vector-sized pieces
  parallel_range(n, kGrain, [&](int64_t b, int64_t e) {
    // a local copy: the compiler then keeps f's pointers in registers instead of reloading
    // them through the captures after every store
    const std::decay_t<F> g = f;
    int64_t i = b;
    for (; i + 2 * kW <= e; i += 2 * kW) {  // full vectors: the lane count is a constant here
      g(i, kW);
      g(i + kW, kW);
    }
    for (; i < e; i += kW) g(i, int(std::min<int64_t>(kW, e - i)));
  });
}

FASTLM_INLINE void store_n(float* p, VF v, int n) { if (n == kW) vstore(p, v); else vstore_part(p, v, n); }

}  // namespace

void add(const float* a, const float* b, float* y, int64_t n) {
  map_elements(n, [=](int64_t i, int m) { store_n(y + i, vadd(vload_n(a + i, m), vload_n(b + i, m)), m); });
}

// silu(g) * u = g / (1 + e^-g) * u
void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  map_elements(n, [=](int64_t i, int m) {
    VF g = vload_n(gate + i, m);
    VF s = vmul(g, vsigmoid(g));
    store_n(y + i, vmul(s, vload_n(up + i, m)), m);
  });
}

// 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3): GPT-2's "gelu_new", computed as
// x * sigmoid(2u), the same function without the cancellation of 1 + tanh(u) for x << 0
FASTLM_INLINE VF vgelu_tanh(VF v) {
  VF u2 = vmul(vset1(2.0f * 0.7978845608028654f), vfma(vmul(vset1(0.044715f), vmul(v, v)), v, v));
  return vmul(v, vsigmoid(u2));
}

void gelu_tanh(const float* x, float* y, int64_t n) {
  map_elements(n, [=](int64_t i, int m) { store_n(y + i, vgelu_tanh(vload_n(x + i, m)), m); });
}

// gelu_tanh(gate) * up (Gemma's GeGLU)
void gelu_mul(const float* gate, const float* up, float* y, int64_t n) {
  map_elements(n, [=](int64_t i, int m) {
    store_n(y + i, vmul(vgelu_tanh(vload_n(gate + i, m)), vload_n(up + i, m)), m);
  });
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1));
  parallel_range(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      VF mx = vset1(-INFINITY);
      for (int64_t i = 0; i < cols; i += kW) {
        int m = int(std::min<int64_t>(kW, cols - i));
        VF v;
        if (m == kW) {
          v = vload(xr + i);
        } else {  // padding lanes must not raise the max: fill them with -inf
          float tmp[kW];
          for (int j = 0; j < kW; ++j) tmp[j] = j < m ? xr[i + j] : -INFINITY;
          v = vload(tmp);
        }
        mx = vmax(mx, v);
      }
      const float row_max = vhmax(mx);
      // a row of -inf (fully masked) gives NaN, as in torch
      VF mv = vset1(row_max), sum = vzero();
      for (int64_t i = 0; i < cols; i += kW) {
        int m = int(std::min<int64_t>(kW, cols - i));
        VF e = vexp(vsub(vload_n(xr + i, m), mv));
        store_n(yr + i, e, m);
        if (m < kW) {
          float tmp[kW] = {};
          for (int j = 0; j < m; ++j) tmp[j] = yr[i + j];
          e = vload(tmp);
        }
        sum = vadd(sum, e);
      }
      // a NaN anywhere in the row makes it all NaN, as in the reference (max ignores a NaN operand)
      bool nan = false;
      for (int64_t i = 0; i < cols; ++i) nan |= std::isnan(xr[i]);
      if (nan) {
        for (int64_t i = 0; i < cols; ++i) yr[i] = NAN;
        continue;
      }
      VF inv = vset1(1.0f / vsum(sum));
      for (int64_t i = 0; i < cols; i += kW) {
        int m = int(std::min<int64_t>(kW, cols - i));
        store_n(yr + i, vmul(vload_n(yr + i, m), inv), m);
      }
    }
  });
}

// x: (T, H, D) with rows row_stride apart, rotated in place by angle pos[t] * inv_freq[i], i < rot_dim / 2.
// rotate-half (Hugging Face): pairs (i, i + rot_dim/2); interleaved (GPT-J): pairs (2i, 2i + 1)
void rope(float* x, int64_t row_stride, const int64_t* pos, int64_t T, int64_t H, int64_t D,
          int64_t rot_dim,
          const float* inv_freq, bool interleaved) {
  const int64_t half = rot_dim / 2;
  parallel_range(T, std::max<int64_t>(1, 2048 / std::max<int64_t>(H * D, 1)), [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> cs;
    cs.resize(size_t(2 * half));
    float* cosv = cs.data();
    float* sinv = cs.data() + half;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        // the angle in float32, as Hugging Face computes it, and its float32 cos/sin
        float angle = float(pos[t]) * inv_freq[i];
        cosv[i] = std::cos(angle);
        sinv[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < H; ++h) {
        float* xh = x + t * row_stride + h * D;
        if (interleaved) {
          for (int64_t i = 0; i < half; ++i) {
            float a = xh[2 * i], b = xh[2 * i + 1];
            xh[2 * i] = a * cosv[i] - b * sinv[i];
            xh[2 * i + 1] = b * cosv[i] + a * sinv[i];
          }
          continue;
        }
        float* x1 = xh;
        float* x2 = xh + half;
        for (int64_t i = 0; i < half; i += kW) {
          int m = int(std::min<int64_t>(kW, half - i));
          VF a = vload_n(x1 + i, m), b = vload_n(x2 + i, m);
          VF c = vload_n(cosv + i, m), s = vload_n(sinv + i, m);
          store_n(x1 + i, vsub(vmul(a, c), vmul(b, s)), m);
          store_n(x2 + i, vfma(a, s, vmul(b, c)), m);
        }
      }
    }
  });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
