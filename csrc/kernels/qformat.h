// the round-to-nearest quantizer of one weight row into a q8 / q4 record (QWeight in kernels.h).
// plain C++ with fp16 done in software, so a record has the same bits whichever ISA wrote it; the
// per-ISA q_quantize only spreads rows over threads, and fastlm/quant/rtn.py holds its NumPy twin.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/half.h"
#include "kernels/kernels.h"

namespace fastlm {

// w: K floats -> rec: q_row_bytes(type, K, G) bytes. each group spans the zero-padded row:
// q8 d = fp16(max|w| / 127); q4 m = fp16(min w), d = fp16((max w - m) / 15)
inline void q_quantize_row(const float* w, int64_t K, QType type, int64_t G, uint8_t* rec) {
  const int64_t kp = q_padded_k(type, K, G), groups = kp / G;
  std::memset(rec, 0, size_t(q_row_bytes(type, K, G)));
  for (int64_t g = 0; g < groups; ++g) {
    float lo = 0.0f, hi = 0.0f, amax = 0.0f;
    for (int64_t k = g * G; k < (g + 1) * G; ++k) {
      const float v = k < K ? w[k] : 0.0f;
      if (k == g * G || v < lo) lo = v;
      if (k == g * G || v > hi) hi = v;
      amax = std::max(amax, std::fabs(v));
    }
    if (type == QType::kQ8) {
      const uint16_t dh = float_to_half(amax / 127.0f);
      const float d = half_to_float(dh), inv = d > 0.0f ? 1.0f / d : 0.0f;
      for (int64_t k = g * G; k < std::min(K, (g + 1) * G); ++k)
        rec[k] = uint8_t(int8_t(std::min(127.0f, std::max(-127.0f, std::nearbyint(w[k] * inv)))));
      std::memcpy(rec + kp + 2 * g, &dh, 2);
      continue;
    }
    const uint16_t mh = float_to_half(lo);
    const float m = half_to_float(mh);
    const uint16_t dh = float_to_half((hi - m) / 15.0f);
    const float d = half_to_float(dh), inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int64_t k = g * G; k < (g + 1) * G; ++k) {  // per 64 elements: k low nibble, 32 + k high
      const float v = k < K ? w[k] : 0.0f;
      const int q = int(std::min(15.0f, std::max(0.0f, std::nearbyint((v - m) * inv))));
      rec[(k / 64) * 32 + k % 32] |= uint8_t((k / 32) % 2 ? q << 4 : q);
    }
    std::memcpy(rec + kp / 2 + 2 * g, &dh, 2);
    std::memcpy(rec + kp / 2 + 2 * groups + 2 * g, &mh, 2);
  }
}

}  // namespace fastlm
