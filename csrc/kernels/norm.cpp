// layer_norm and rms_norm over the last axis.
// x, y: (rows, cols) row-major; weight, bias: (cols,) or null (= ones / zeros).
#include <cmath>

#include "kernels/isa.h"
#include "runtime/threadpool.h"

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

// rows per task: enough work (~16k elements) to be worth waking a thread
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

// 1.0 in the first m lanes, 0.0 after
FASTLM_INLINE VF lane_mask(int m) {
  static const float ones[kW] = {1, 1, 1, 1, 1, 1, 1, 1,
#if defined(FASTLM_ISA_AVX512)
                                 1, 1, 1, 1, 1, 1, 1, 1,
#endif
  };
  return vload_part(ones, m);
}

FASTLM_INLINE float row_sum(const float* x, int64_t n) {
  VF s0 = vzero(), s1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) {
    s0 = vadd(s0, vload(x + i));
    s1 = vadd(s1, vload(x + i + kW));
  }
  for (; i < n; i += kW) s0 = vadd(s0, vload_n(x + i, int(std::min<int64_t>(kW, n - i))));
  return vsum(vadd(s0, s1));
}

// sum of (x - c)^2
FASTLM_INLINE float row_sq_dev(const float* x, int64_t n, float c) {
  VF cv = vset1(c), s0 = vzero(), s1 = vzero();
  int64_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) {
    VF d0 = vsub(vload(x + i), cv), d1 = vsub(vload(x + i + kW), cv);
    s0 = vfma(d0, d0, s0);
    s1 = vfma(d1, d1, s1);
  }
  for (; i < n; i += kW) {
    int m = int(std::min<int64_t>(kW, n - i));
    VF d = vsub(vload_n(x + i, m), cv);
    if (m < kW) d = vmul(d, lane_mask(m));  // the zero-filled lanes are not (0 - c)
    s0 = vfma(d, d, s0);
  }
  return vsum(vadd(s0, s1));
}

// y = (x - mean) * rstd * w + b, with w/b optional
FASTLM_INLINE void row_scale(const float* x, float* y, int64_t n, float mean, float rstd,
                             const float* w, const float* b) {
  VF mv = vset1(mean), rv = vset1(rstd);
  for (int64_t i = 0; i < n; i += kW) {
    int m = int(std::min<int64_t>(kW, n - i));
    VF t = vmul(vsub(vload_n(x + i, m), mv), rv);
    if (w) t = vmul(t, vload_n(w + i, m));
    if (b) t = vadd(t, vload_n(b + i, m));
    if (m == kW) vstore(y + i, t); else vstore_part(y + i, t, m);
  }
}

}  // namespace

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t cols, float eps) {
  parallel_range(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float ms = row_sq_dev(xr, cols, 0.0f) / float(cols);
      row_scale(xr, y + r * cols, cols, 0.0f, 1.0f / std::sqrt(ms + eps), w, nullptr);
    }
  });
}

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows,
                int64_t cols, float eps) {
  parallel_range(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      // two passes: the mean first, then the spread around it (no cancellation)
      float mean = row_sum(xr, cols) / float(cols);
      float var = row_sq_dev(xr, cols, mean) / float(cols);
      row_scale(xr, y + r * cols, cols, mean, 1.0f / std::sqrt(var + eps), w, b);
    }
  });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
