// layer_norm and rms_norm over the last axis.
// x, y: (rows, cols) row-major; weight, bias: (cols,) or null (= ones / zeros).
#include <cmath>

#include "kernels/isa.h"
#include "base/threadpool.h"

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
template <bool kW_, bool kB_>
FASTLM_INLINE VF scale_one(VF xv, VF mv, VF rv, const float* w, const float* b, int64_t i, int m) {
  VF t = vmul(vsub(xv, mv), rv);
  if (kW_ && kB_) return vfma(t, vload_n(w + i, m), vload_n(b + i, m));
  if (kW_) t = vmul(t, vload_n(w + i, m));
  if (kB_) t = vadd(t, vload_n(b + i, m));
  return t;
}

template <bool kW_, bool kB_>
FASTLM_INLINE void row_scale_t(const float* x, float* y, int64_t n, float mean, float rstd, const float* w,
                               const float* b) {
  VF mv = vset1(mean), rv = vset1(rstd);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(y + i, scale_one<kW_, kB_>(vload(x + i), mv, rv, w, b, i, kW));
  if (i < n) {
    int m = int(n - i);
    vstore_part(y + i, scale_one<kW_, kB_>(vload_part(x + i, m), mv, rv, w, b, i, m), m);
  }
}

FASTLM_INLINE void row_scale(const float* x, float* y, int64_t n, float mean, float rstd, const float* w,
                             const float* b) {
  if (w && b) return row_scale_t<true, true>(x, y, n, mean, rstd, w, b);
  if (w) return row_scale_t<true, false>(x, y, n, mean, rstd, w, b);
  if (b) return row_scale_t<false, true>(x, y, n, mean, rstd, w, b);
  row_scale_t<false, false>(x, y, n, mean, rstd, w, b);
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
      // one pass over the row for sum and sum of squares, taken around x[0] so that a row far
      // from zero does not cancel; the spread is then E[d^2] - E[d]^2 with d = x - x[0]
      const float shift = xr[0];
      VF sv = vset1(shift), s1 = vzero(), s2 = vzero(), t1 = vzero(), t2 = vzero();
      int64_t i = 0;
      for (; i + 2 * kW <= cols; i += 2 * kW) {
        VF d0 = vsub(vload(xr + i), sv), d1 = vsub(vload(xr + i + kW), sv);
        s1 = vadd(s1, d0);
        t1 = vadd(t1, d1);
        s2 = vfma(d0, d0, s2);
        t2 = vfma(d1, d1, t2);
      }
      for (; i < cols; i += kW) {
        int m = int(std::min<int64_t>(kW, cols - i));
        VF d = vsub(vload_n(xr + i, m), sv);
        if (m < kW) d = vmul(d, lane_mask(m));
        s1 = vadd(s1, d);
        s2 = vfma(d, d, s2);
      }
      const float mean_d = vsum(vadd(s1, t1)) / float(cols);
      float var = std::max(0.0f, vsum(vadd(s2, t2)) / float(cols) - mean_d * mean_d);
      const float mean = shift + mean_d;
      // x[0] far from the mean (an outlier): the difference above cancelled, so take the
      // spread again around the mean itself (a second pass, from L1)
      if (mean_d * mean_d > 16.0f * var) var = row_sq_dev(xr, cols, mean) / float(cols);
      row_scale(xr, y + r * cols, cols, mean, 1.0f / std::sqrt(var + eps), w, b);
    }
  });
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
