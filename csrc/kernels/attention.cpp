// fused softmax attention over a KV cache, online softmax: no (T, S) score matrix in memory.
// q: (H, T, D), k/v: (Hkv, S, D), out: (H, T, D) (strided, see kernels.h); H % Hkv == 0 (grouped-query attention: query
// head h reads kv head h / (H / Hkv)). query t sits at absolute position S - T + t; causal: it
// sees keys 0 .. S - T + t, the last `window` of them with a sliding window.
//
// two schedules, one per regime:
//  - few query rows per kv head (decode, T small): split-KV. tasks = (kv head, key chunk); every
//    query row of the group is scored against each key as a dot product, partial (max, sum, acc)
//    per chunk are merged at the end. keeps both threads busy with 3 kv heads and one token.
//  - many rows (prefill): tasks = (kv head, block of BQ queries). a key block of BK keys is
//    transposed once into (D, BK) and shared by the group's heads; scores for one query row are
//    an outer-product sweep over D (BK/kW accumulators, no horizontal sums), then the running
//    max / sum / acc update (flash-attention style) and acc += p @ V.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/isa.h"
#include "base/threadpool.h"

namespace fastlm {
namespace FASTLM_ISA_NS {
namespace {

constexpr int BK = 8 * kW;     // keys per block in the prefill schedule (8 accumulators)
constexpr int BQ = 32;         // query rows per prefill task
constexpr int64_t kDecodeMaxT = 4;
constexpr int64_t kMinChunk = 64;  // keys per split-KV task at least

FASTLM_INLINE void store_n(float* p, VF v, int n) { if (n == kW) vstore(p, v); else vstore_part(p, v, n); }

// s[j] = cap * tanh(s[j] / cap) for j < n (Gemma 2's attention logit soft-capping); their max.
// tanh(y) = 2 sigmoid(2y) - 1 in vectors (absolute error ~1e-7 of cap; scalar tanh for the tail)
float soft_cap(float* s, int64_t n, float cap) {
  const VF k = vset1(2.0f / cap), vcap = vset1(cap), one = vset1(1.0f), two = vset1(2.0f);
  VF mxv = vset1(-INFINITY);
  int64_t j = 0;
  for (; j + kW <= n; j += kW) {
    VF t = vmul(vcap, vsub(vmul(two, vsigmoid(vmul(vload(s + j), k))), one));
    vstore(s + j, t);
    mxv = vmax(mxv, t);
  }
  float mx = j ? vhmax(mxv) : -INFINITY;
  for (; j < n; ++j) {
    s[j] = cap * std::tanh(s[j] / cap);
    mx = std::max(mx, s[j]);
  }
  return mx;
}

// the first key query t may see: 0, or the start of its sliding window
FASTLM_INLINE int64_t first_key(const AttentionArgs& a, int64_t t) {
  return a.causal && a.window > 0 ? std::max<int64_t>(0, a.S - a.T + t + 1 - a.window) : 0;
}

// dot product of two D-vectors
FASTLM_INLINE float dot(const float* a, const float* b, int64_t D) {
  VF s0 = vzero(), s1 = vzero();
  int64_t d = 0;
  for (; d + 2 * kW <= D; d += 2 * kW) {
    s0 = vfma(vload(a + d), vload(b + d), s0);
    s1 = vfma(vload(a + d + kW), vload(b + d + kW), s1);
  }
  for (; d < D; d += kW) {
    int m = int(std::min<int64_t>(kW, D - d));
    s0 = vfma(vload_n(a + d, m), vload_n(b + d, m), s0);
  }
  return vsum(vadd(s0, s1));
}

// acc[0:D] = acc * c + sum_j p[j] * V[j], V rows D apart. 8 vectors of D in flight: each is an
// FMA chain across j, and 8 chains cover the FMA latency (4 would leave half the units idle)
constexpr int kPV = 8;
FASTLM_INLINE void scale_acc_pv(float* acc, float c, const float* p, const float* v, int64_t n_keys,
                                int64_t D) {
  VF cv = vset1(c);
  for (int64_t d = 0; d < D; d += kPV * kW) {
    int m[kPV];
    VF a[kPV];
#pragma GCC unroll 8
    for (int u = 0; u < kPV; ++u) {
      int64_t rem = D - d - u * kW;
      m[u] = int(rem <= 0 ? 0 : std::min<int64_t>(kW, rem));
      a[u] = m[u] ? vmul(vload_n(acc + d + u * kW, m[u]), cv) : vzero();
    }
    if (m[kPV - 1] == kW) {  // the common case: all 8 vectors full (D = 64 with avx2, 128 with avx512)
      for (int64_t j = 0; j < n_keys; ++j) {
        VF pj = vset1(p[j]);
        const float* vj = v + j * D + d;
#pragma GCC unroll 8
        for (int u = 0; u < kPV; ++u) a[u] = vfma(pj, vload(vj + u * kW), a[u]);
      }
    } else {
      for (int64_t j = 0; j < n_keys; ++j) {
        VF pj = vset1(p[j]);
        const float* vj = v + j * D + d;
#pragma GCC unroll 8
        for (int u = 0; u < kPV; ++u)
          if (m[u]) a[u] = vfma(pj, vload_n(vj + u * kW, m[u]), a[u]);
      }
    }
#pragma GCC unroll 8
    for (int u = 0; u < kPV; ++u)
      if (m[u]) store_n(acc + d + u * kW, a[u], m[u]);
  }
}

struct Partial {  // running softmax state of one query row over some keys
  float max;
  float sum;
};

thread_local std::vector<float> t_scratch;

float* scratch(size_t n) {
  if (t_scratch.size() < n) t_scratch.resize(n);
  return t_scratch.data();
}

// ---- decode: split-KV ----
void attention_split_kv(const AttentionArgs& a) {
  const int64_t G = a.H / a.Hkv, T = a.T, S = a.S, D = a.D, R = G * T;
  const int threads = num_threads();
  const int64_t lo = first_key(a, 0);  // keys before every row's window are never read
  const int64_t span = S - lo;
  // chunks per kv head: enough tasks for every thread, at least kMinChunk keys each
  int64_t n_split = std::max<int64_t>(1, (2 * threads + a.Hkv - 1) / a.Hkv);
  n_split = std::min<int64_t>(n_split, std::max<int64_t>(1, span / kMinChunk));
  const int64_t chunk = (span + n_split - 1) / n_split;
  n_split = (span + chunk - 1) / chunk;

  // partial results: (Hkv, n_split, R) x (D acc + max + sum)
  const int64_t stride = D + 2;
  thread_local std::vector<float> partial_buf;  // the caller's: workers reach it through `partial`
  partial_buf.resize(size_t(a.Hkv * n_split * R * stride));
  float* const partial = partial_buf.data();

  parallel_for(a.Hkv * n_split, [&](int64_t task) {
    const int64_t hk = task / n_split, sp = task % n_split;
    const int64_t c0 = lo + sp * chunk, k1 = std::min(S, c0 + chunk);
    const float* kh = a.k + hk * a.kv_head_stride;
    const float* vh = a.v + hk * a.kv_head_stride;
    float* p = scratch(size_t(k1 - c0));
    const float scale = a.scale;  // a local: stores to p cannot alias it
    for (int64_t r = 0; r < R; ++r) {
      const int64_t g = r / T, t = r % T;
      const float* qr = a.q + (hk * G + g) * a.q_head_stride + t * a.q_row_stride;
      const int64_t limit = a.causal ? std::min(k1, S - T + t + 1) : k1;
      const int64_t k0 = std::max(c0, first_key(a, t));
      float* out = partial + ((hk * n_split + sp) * R + r) * stride;
      Partial* st = reinterpret_cast<Partial*>(out + D);
      std::fill(out, out + D, 0.0f);
      st->max = -INFINITY;
      st->sum = 0.0f;
      if (limit <= k0) continue;
      const int64_t n = limit - k0;
      float mx = -INFINITY;
      int64_t j = 0;
      for (; j + 4 <= n; j += 4) {  // four keys at a time: independent FMA chains
        const float* k_j = kh + (k0 + j) * D;
        VF s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
        for (int64_t d = 0; d < D; d += kW) {
          int m = int(std::min<int64_t>(kW, D - d));
          VF qv = vload_n(qr + d, m);
          s0 = vfma(qv, vload_n(k_j + d, m), s0);
          s1 = vfma(qv, vload_n(k_j + D + d, m), s1);
          s2 = vfma(qv, vload_n(k_j + 2 * D + d, m), s2);
          s3 = vfma(qv, vload_n(k_j + 3 * D + d, m), s3);
        }
        p[j] = vsum(s0) * scale;
        p[j + 1] = vsum(s1) * scale;
        p[j + 2] = vsum(s2) * scale;
        p[j + 3] = vsum(s3) * scale;
        mx = std::max(mx, std::max(std::max(p[j], p[j + 1]), std::max(p[j + 2], p[j + 3])));
      }
      for (; j < n; ++j) {
        p[j] = dot(qr, kh + (k0 + j) * D, D) * scale;
        mx = std::max(mx, p[j]);
      }
      if (a.softcap > 0) mx = soft_cap(p, n, a.softcap);
      VF mv = vset1(mx), sum = vzero();
      int64_t i = 0;
      for (; i + kW <= n; i += kW) {
        VF e = vexp(vsub(vload(p + i), mv));
        vstore(p + i, e);
        sum = vadd(sum, e);
      }
      float s = vsum(sum);
      for (; i < n; ++i) {
        p[i] = std::exp(p[i] - mx);
        s += p[i];
      }
      st->max = mx;
      st->sum = s;
      scale_acc_pv(out, 0.0f, p, vh + k0 * D, n, D);
    }
  });

  // merge the chunks of each row: rescale each to the global max
  parallel_range(a.Hkv * R, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t hr = r0; hr < r1; ++hr) {
      const int64_t hk = hr / R, r = hr % R, g = r / T, t = r % T;
      float mx = -INFINITY;
      for (int64_t sp = 0; sp < n_split; ++sp) {
        const Partial* st = reinterpret_cast<const Partial*>(partial + ((hk * n_split + sp) * R + r) * stride + D);
        mx = std::max(mx, st->max);
      }
      float* o = a.out + (hk * G + g) * a.out_head_stride + t * a.out_row_stride;
      std::fill(o, o + D, 0.0f);
      float total = 0.0f;
      for (int64_t sp = 0; sp < n_split; ++sp) {
        const float* pr = partial + ((hk * n_split + sp) * R + r) * stride;
        const Partial* st = reinterpret_cast<const Partial*>(pr + D);
        if (st->sum == 0.0f) continue;
        float w = std::exp(st->max - mx);
        total += st->sum * w;
        for (int64_t d = 0; d < D; ++d) o[d] += pr[d] * w;
      }
      const float inv = 1.0f / total;
      for (int64_t d = 0; d < D; ++d) o[d] *= inv;
    }
  });
}

// ---- prefill: query blocks, transposed key blocks ----
void attention_blocked(const AttentionArgs& a) {
  const int64_t G = a.H / a.Hkv, T = a.T, S = a.S, D = a.D;
  const int64_t q_blocks = (T + BQ - 1) / BQ;
  const int64_t offset = S - T;  // absolute position of query 0

  // K transposed once per call to (Hkv, D, Sp), zero past S: every query block then reads a key
  // block's scores as rows of BK contiguous floats (transposing per block per task cost as much
  // as a third of the kernel)
  // rows padded by one cache line: a power-of-two row stride would put every row of a key block
  // in the same few L1 sets
  const int64_t Sp = (S + BK - 1) / BK * BK + 16;
  thread_local std::vector<float> kt_buf;  // the caller's; workers reach it through `kt_all`
  kt_buf.resize(size_t(a.Hkv * D * Sp));
  float* const kt_all = kt_buf.data();
  const int64_t key_blocks = (S + BK - 1) / BK;
  parallel_for(a.Hkv * key_blocks, [&](int64_t task) {
    const int64_t hk = task / key_blocks, kb = (task % key_blocks) * BK;
    const int64_t nk = std::min<int64_t>(BK, S - kb);
    const float* kh = a.k + hk * a.kv_head_stride;
    float* dst = kt_all + hk * D * Sp + kb;
    for (int64_t d = 0; d < D; ++d) {
      float* row = dst + d * Sp;
      for (int64_t j = 0; j < nk; ++j) row[j] = kh[(kb + j) * D + d];
      for (int64_t j = nk; j < BK; ++j) row[j] = 0.0f;
    }
  });

  parallel_for(a.Hkv * q_blocks, [&](int64_t task) {
    // the last query blocks see the most keys: run them first
    const int64_t hk = task % a.Hkv, qb = q_blocks - 1 - task / a.Hkv;
    const int64_t t0 = qb * BQ, t1 = std::min(T, t0 + BQ), nq = t1 - t0;
    const int64_t key_end = a.causal ? offset + t1 : S;  // exclusive, for the last row
    const float* vh = a.v + hk * a.kv_head_stride;

    // scratch: s (BK) | acc (G, BQ, D) | max, sum (G, BQ)
    float* s = scratch(size_t(BK + G * BQ * D + 2 * G * BQ));
    float* acc = s + BK;
    float* row_max = acc + G * BQ * D;
    float* row_sum = row_max + G * BQ;
    std::fill(acc, acc + G * BQ * D, 0.0f);
    std::fill(row_max, row_max + G * BQ, -INFINITY);
    std::fill(row_sum, row_sum + G * BQ, 0.0f);

    for (int64_t kb = first_key(a, t0) / BK * BK; kb < key_end; kb += BK) {
      const int64_t nk = std::min<int64_t>(BK, key_end - kb);
      const float* kt = kt_all + hk * D * Sp + kb;  // (D, BK) with rows Sp apart
      const float* vb = vh + kb * D;
      for (int64_t g = 0; g < G; ++g) {
        const float* qg = a.q + (hk * G + g) * a.q_head_stride;
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t t = t0 + i;
          const int64_t limit = a.causal ? offset + t + 1 : S;  // keys < limit are visible
          const int64_t first = first_key(a, t);                 // and keys >= first
          if (limit <= kb || first >= kb + nk) continue;
          const int64_t n_vis = std::min<int64_t>(nk, limit - kb);
          const float* qr = qg + t * a.q_row_stride;
          VF sc[8];
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u) sc[u] = vzero();
          for (int64_t d = 0; d < D; ++d) {
            VF qd = vset1(qr[d]);
            const float* kr = kt + d * Sp;
#pragma GCC unroll 8
            for (int u = 0; u < 8; ++u) sc[u] = vfma(qd, vload(kr + u * kW), sc[u]);
          }
          VF sv = vset1(a.scale), mxv = vset1(-INFINITY);
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u) {
            sc[u] = vmul(sc[u], sv);
            vstore(s + u * kW, sc[u]);
          }
          if (a.softcap > 0) soft_cap(s, BK, a.softcap);  // before the masks: they stay -inf
          for (int64_t j = n_vis; j < BK; ++j) s[j] = -INFINITY;  // masked and padding keys
          for (int64_t j = 0; j < first - kb; ++j) s[j] = -INFINITY;  // before the sliding window
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u) mxv = vmax(mxv, vload(s + u * kW));
          const int64_t ri = g * BQ + i;
          const float m_new = std::max(row_max[ri], vhmax(mxv));
          const float c = std::exp(row_max[ri] - m_new);  // rescale the running sum: the max grew
          VF mn = vset1(m_new), sum = vzero();
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u) {
            VF e = vexp(vsub(vload(s + u * kW), mn));
            vstore(s + u * kW, e);
            sum = vadd(sum, e);
          }
          row_sum[ri] = row_sum[ri] * c + vsum(sum);
          row_max[ri] = m_new;
          scale_acc_pv(acc + ri * D, c, s, vb, n_vis, D);
        }
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      float* og = a.out + (hk * G + g) * a.out_head_stride;
      for (int64_t i = 0; i < nq; ++i) {
        const int64_t ri = g * BQ + i;
        const float* ar = acc + ri * D;
        float* o = og + (t0 + i) * a.out_row_stride;
        VF inv = vset1(1.0f / row_sum[ri]);
        for (int64_t d = 0; d < D; d += kW) {
          int m = int(std::min<int64_t>(kW, D - d));
          store_n(o + d, vmul(vload_n(ar + d, m), inv), m);
        }
      }
    }
  });
}

}  // namespace

void attention(const AttentionArgs& a) {
  if (a.T <= kDecodeMaxT) attention_split_kv(a); else attention_blocked(a);
}

}  // namespace FASTLM_ISA_NS
}  // namespace fastlm
