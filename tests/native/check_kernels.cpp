// checks one ISA's kernel table against the scalar references on odd shapes, outside Python.
// tests/test_emulated_isa.py builds it with SIMDe standing in for the intrinsics, so the AVX-512
// paths are exercised on CPUs without AVX-512. prints "N passed, M failed".
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/half.h"
#include "kernels/kernels.h"

namespace fl = fastlm;

static int g_pass = 0, g_fail = 0;
static std::mt19937 g_rng(1234);

static std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

static void check(const std::string& what, const float* got, const float* want, size_t n, double rtol) {
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(want[i])));
  for (size_t i = 0; i < n; ++i) {
    double e = std::fabs(double(got[i]) - want[i]);
    if (!(e <= err)) err = e;  // NaN propagates
  }
  bool ok = err / scale <= rtol;
  (ok ? g_pass : g_fail)++;
  if (!ok) std::printf("FAIL %s: max error %.3g of max |ref| %.3g\n", what.c_str(), err / scale, scale);
}

static uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

static void matmul_cases(const fl::KernelTable& t) {
  const int64_t shapes[][3] = {{1, 7, 3}, {1, 577, 65}, {2, 65, 33}, {3, 63, 7}, {4, 65, 7},
                               {7, 577, 63}, {15, 63, 1537}, {33, 1537, 40}};
  for (auto& s : shapes) {
    const int64_t M = s[0], K = s[1], N = s[2];
    auto x = randn(size_t(M * K)), w = randn(size_t(N * K)), b = randn(size_t(N));
    std::vector<uint16_t> wb(w.size());
    for (size_t i = 0; i < w.size(); ++i) wb[i] = to_bf16(w[i]);
    for (int bf = 0; bf < 2; ++bf) {
      const void* wp = bf ? static_cast<const void*>(wb.data()) : w.data();
      fl::DType wt = bf ? fl::DType::kBF16 : fl::DType::kF32;
      std::vector<float> want(size_t(M * N)), got(size_t(M * N));
      fl::ref::matmul(x.data(), M, K, wp, wt, N, b.data(), want.data());
      std::vector<uint8_t> ws(t.matmul_workspace(M, N, K, false) + 64);
      fl::MatmulArgs a{x.data(), M, K, N, wp, wt, false, b.data(), got.data(), ws.data()};
      t.matmul(a);
      std::string tag = "matmul " + std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N) + (bf ? " bf16" : " f32");
      check(tag, got.data(), want.data(), got.size(), 1e-5);
      std::vector<uint8_t> packed(size_t(fl::packed_weight_elems(N, K, t.pack_nr)) * fl::dtype_size(wt));
      t.pack_weight(wp, wt, N, K, packed.data());
      fl::MatmulArgs p{x.data(), M, K, N, packed.data(), wt, true, b.data(), got.data(), nullptr};
      t.matmul(p);
      check(tag + " packed", got.data(), want.data(), got.size(), 1e-5);
    }
  }
}

static void attention_cases(const fl::KernelTable& t) {
  const int64_t cases[][5] = {{9, 3, 1, 100, 64}, {1, 1, 1, 1, 64}, {4, 2, 3, 70, 64}, {4, 2, 7, 7, 16},
                              {6, 3, 65, 65, 64}, {3, 1, 33, 100, 80}, {2, 2, 5, 12, 128}, {4, 2, 9, 9, 7}};
  for (auto& c : cases) {
    const int64_t H = c[0], Hkv = c[1], T = c[2], S = c[3], D = c[4];
    auto q = randn(size_t(H * T * D)), k = randn(size_t(Hkv * S * D)), v = randn(size_t(Hkv * S * D));
    for (int mode = 0; mode < 4; ++mode) {  // full, causal, causal with a window of S / 3, and soft-capped
      const bool causal = mode > 0;
      const int64_t window = mode >= 2 ? std::max<int64_t>(1, S / 3) : 0;
      std::vector<float> want(q.size()), got(q.size());
      fl::AttentionArgs a{q.data(), k.data(), v.data(), want.data(), H, Hkv, T, S, D, T * D, D, S * D, T * D, D,
                          1.0f / std::sqrt(float(D)), causal, window, mode == 3 ? 0.5f : 0.0f};
      fl::ref::attention(a);
      a.out = got.data();
      t.attention(a);
      check("attention " + std::to_string(H) + "/" + std::to_string(Hkv) + " T" + std::to_string(T) + " S" +
                std::to_string(S) + " D" + std::to_string(D) + (causal ? " causal" : "") +
                (window ? " window " + std::to_string(window) : "") + (mode == 3 ? " softcap" : ""),
            got.data(), want.data(), got.size(), 1e-4);
    }
  }
}

static void row_op_cases(const fl::KernelTable& t) {
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {7, 65}, {5, 577}, {2, 1537}};
  for (auto& s : shapes) {
    const int64_t R = s[0], C = s[1];
    const std::string tag = " " + std::to_string(R) + "x" + std::to_string(C);
    auto x = randn(size_t(R * C), 3.0f), w = randn(size_t(C)), b = randn(size_t(C)), u = randn(size_t(R * C));
    for (auto& e : x) e += 2.0f;
    std::vector<float> want(x.size()), got(x.size());
    fl::ref::layer_norm(x.data(), w.data(), b.data(), want.data(), R, C, 1e-5f);
    t.layer_norm(x.data(), w.data(), b.data(), got.data(), R, C, 1e-5f);
    check("layer_norm" + tag, got.data(), want.data(), got.size(), 1e-5);
    fl::ref::rms_norm(x.data(), w.data(), want.data(), R, C, 1e-6f);
    t.rms_norm(x.data(), w.data(), got.data(), R, C, 1e-6f);
    check("rms_norm" + tag, got.data(), want.data(), got.size(), 1e-5);
    fl::ref::softmax(x.data(), want.data(), R, C);
    t.softmax(x.data(), got.data(), R, C);
    check("softmax" + tag, got.data(), want.data(), got.size(), 2e-6);
    fl::ref::gelu_tanh(x.data(), want.data(), R * C);
    t.gelu_tanh(x.data(), got.data(), R * C);
    check("gelu_tanh" + tag, got.data(), want.data(), got.size(), 2e-6);
    fl::ref::silu_mul(x.data(), u.data(), want.data(), R * C);
    t.silu_mul(x.data(), u.data(), got.data(), R * C);
    check("silu_mul" + tag, got.data(), want.data(), got.size(), 2e-6);
    fl::ref::gelu_mul(x.data(), u.data(), want.data(), R * C);
    t.gelu_mul(x.data(), u.data(), got.data(), R * C);
    check("gelu_mul" + tag, got.data(), want.data(), got.size(), 2e-6);
    fl::ref::add(x.data(), u.data(), want.data(), R * C);
    t.add(x.data(), u.data(), got.data(), R * C);
    check("add" + tag, got.data(), want.data(), got.size(), 0.0);

  }
}

static void q_cases(const fl::KernelTable& t) {
  const int64_t shapes[][3] = {{1, 64, 5}, {1, 577, 65}, {2, 100, 7}, {3, 1536, 9}, {5, 33, 4}, {12, 200, 40}, {20, 70, 9}};
  for (int type = 0; type < 2; ++type) {
    for (int64_t G : {32, 64, 128}) {
      for (auto& s : shapes) {
        const int64_t M = s[0], K = s[1], N = s[2];
        const fl::QType qt = fl::QType(type);
        auto x = randn(size_t(M * K)), w = randn(size_t(N * K)), b = randn(size_t(N));
        const int64_t rb = fl::q_row_bytes(qt, K, G);
        std::vector<uint8_t> r1(size_t(N * rb)), r2(size_t(N * rb));
        fl::ref::q_quantize(w.data(), N, K, qt, G, r1.data());
        t.q_quantize(w.data(), N, K, qt, G, r2.data());
        const std::string tag = std::string(type ? " q4" : " q8") + " G" + std::to_string(G) + " " + std::to_string(M) +
                                "x" + std::to_string(K) + "x" + std::to_string(N);
        (r1 == r2 ? g_pass : g_fail)++;
        if (r1 != r2) std::printf("FAIL q_quantize%s: not bit-exact\n", tag.c_str());
        fl::QWeight qw{r1.data(), qt, N, K, G, b.data()};
        std::vector<float> want(static_cast<size_t>(M * N)), got(static_cast<size_t>(M * N));
        if (M <= 16) {
          fl::QMatmulArgs a{x.data(), M, K, &qw, 1, want.data(), N};
          fl::ref::q_matmul(a);
        } else {  // many rows run on dequantized weights with float activations
          std::vector<float> wd(size_t(N * K));
          for (int64_t n = 0; n < N; ++n) fl::ref::q_dequantize_row(qw, n, wd.data() + n * K);
          fl::ref::matmul(x.data(), M, K, wd.data(), fl::DType::kF32, N, b.data(), want.data());
        }
        fl::QMatmulArgs a{x.data(), M, K, &qw, 1, got.data(), N};
        t.q_matmul(a);
        check("q_matmul" + tag, got.data(), want.data(), got.size(), 2e-5);
        std::vector<float> d1(static_cast<size_t>(K)), d2(static_cast<size_t>(K));
        fl::ref::q_dequantize_row(qw, N - 1, d1.data());
        t.q_dequantize_row(qw, N - 1, d2.data());
        check("q_dequantize_row" + tag, d2.data(), d1.data(), d1.size(), 0.0);
      }
    }
  }
}

// the GGUF block types: random blocks whose fp16 fields are set to small finite scales
static void ggml_cases(const fl::KernelTable& t) {
  struct Case { fl::QType type; std::vector<int> f16; };
  const Case cases[] = {{fl::QType::kQ5_0, {0}}, {fl::QType::kQ5_1, {0, 2}}, {fl::QType::kQ2_K, {80, 82}},
                        {fl::QType::kQ3_K, {108}}, {fl::QType::kQ4_K, {0, 2}}, {fl::QType::kQ5_K, {0, 2}},
                        {fl::QType::kQ6_K, {208}}, {fl::QType::kIQ4_NL, {0}}, {fl::QType::kIQ4_XS, {0}}};
  const int64_t shapes[][3] = {{1, 256, 5}, {3, 768, 9}, {16, 512, 7}, {20, 256, 9}};
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.01f, 0.01f);
  for (const Case& c : cases) {
    const fl::GgmlTypeInfo info = fl::ggml_type_info(c.type);
    for (auto& s : shapes) {
      const int64_t M = s[0], K = info.qk == 32 && s[1] == 512 ? 576 : s[1], N = s[2];
      const int64_t rb = fl::q_row_bytes(c.type, K, info.qk), blocks = N * K / info.qk;
      std::vector<uint8_t> rec(size_t(N * rb));
      for (auto& v : rec) v = uint8_t(byte(g_rng));
      for (int64_t b = 0; b < blocks; ++b)
        for (int off : c.f16) {
          const uint16_t h = fl::float_to_half(scale(g_rng));
          std::memcpy(rec.data() + b * info.bytes + off, &h, 2);
        }
      auto x = randn(size_t(M * K)), bias = randn(size_t(N));
      fl::QWeight qw{rec.data(), c.type, N, K, info.qk, bias.data()};
      std::vector<float> want(size_t(M * N)), got(size_t(M * N));
      if (M <= 16) {
        fl::QMatmulArgs a{x.data(), M, K, &qw, 1, want.data(), N};
        fl::ref::q_matmul(a);
      } else {
        std::vector<float> wd(size_t(N * K));
        for (int64_t n = 0; n < N; ++n) fl::ref::q_dequantize_row(qw, n, wd.data() + n * K);
        fl::ref::matmul(x.data(), M, K, wd.data(), fl::DType::kF32, N, bias.data(), want.data());
      }
      fl::QMatmulArgs a{x.data(), M, K, &qw, 1, got.data(), N};
      t.q_matmul(a);
      const std::string tag = std::string(" ") + info.name + " " + std::to_string(M) + "x" + std::to_string(K) + "x" +
                              std::to_string(N);
      check("q_matmul" + tag, got.data(), want.data(), got.size(), 2e-5);
      std::vector<float> d1(static_cast<size_t>(K)), d2(static_cast<size_t>(K));
      fl::ref::q_dequantize_row(qw, N - 1, d1.data());
      t.q_dequantize_row(qw, N - 1, d2.data());
      check("q_dequantize_row" + tag, d2.data(), d1.data(), d1.size(), 0.0);
    }
  }
}

static void rope_cases(const fl::KernelTable& t) {
  const int64_t cases[][4] = {{1, 1, 2, 2}, {7, 3, 64, 64}, {5, 2, 80, 32}, {9, 4, 128, 128}, {3, 1, 14, 14}};
  for (auto& c : cases) {
    const int64_t T = c[0], H = c[1], D = c[2], rot = c[3];
    std::vector<int64_t> pos(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) pos[size_t(i)] = (i * 977) % 4096;
    std::vector<float> inv(static_cast<size_t>(rot / 2));
    for (int64_t i = 0; i < rot / 2; ++i) inv[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / float(rot));
    for (int il = 0; il < 2; ++il) {
      auto want = randn(size_t(T * H * D));
      auto got = want;
      fl::ref::rope(want.data(), H * D, pos.data(), T, H, D, rot, inv.data(), il);
      t.rope(got.data(), H * D, pos.data(), T, H, D, rot, inv.data(), il);
      check("rope T" + std::to_string(T) + " D" + std::to_string(D) + (il ? " interleaved" : ""), got.data(),
            want.data(), got.size(), 2e-6);
      // rows inside wider rows (a fused q|k|v output): the padding must stay untouched
      const int64_t stride = H * D + 5;
      auto swant = randn(size_t(T * stride));
      auto sgot = swant;
      fl::ref::rope(swant.data(), stride, pos.data(), T, H, D, rot, inv.data(), il);
      t.rope(sgot.data(), stride, pos.data(), T, H, D, rot, inv.data(), il);
      check("rope strided T" + std::to_string(T) + " D" + std::to_string(D), sgot.data(), swant.data(), sgot.size(),
            2e-6);
    }
  }
}

int main() {
  const fl::KernelTable& t = fl::FASTLM_ISA_NS::kernel_table();
  std::printf("checking the %s kernels against the references\n", t.name);
  matmul_cases(t);
  attention_cases(t);
  row_op_cases(t);
  q_cases(t);
  ggml_cases(t);
  rope_cases(t);
  std::printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
