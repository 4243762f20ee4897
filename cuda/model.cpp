// The decoder on the GPU (see model.h): the CPU executor's step (runtime/model.cpp), kernel by
// kernel. Linear layers: the GEMV kernel for up to 8 rows (decode: the weight read once), bf16
// weights on tensor cores above that, fp32 weights on the SGEMM. q|k|v and gate|up are fused
// into one weight each at the first step. The KV cache, (max_seq, 2, Hkv, D) per layer, is bf16
// for a bf16 model (prefill chunks of 64 rows or more then take FlashAttention-2 over it), else fp32.
// A step's tokens, positions and cache pointers go to the device in one copy and the kernels read
// them there: one store_kv and one attention launch serve every sequence of a batch, and a decode
// step's launches do not change with its length, so after its first step a batch size replays
// as one CUDA graph. Each residual add is fused with the norm that follows it, and rope turns q
// and k (adjacent heads of the q|k|v row) in one launch: 9 launches a layer.
#include "cuda/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace fastlm {
namespace FASTLM_GPU_NS {
namespace {

constexpr int64_t kStepRows = 512;     // prefill rows per step
constexpr int64_t kFlashMinRows = 64;  // prefill chunks this long or longer take FlashAttention (bf16 caches)

DType dtype_of(DType wt) { return wt == DType::kBF16 ? DType::kBF16 : DType::kF32; }

}  // namespace

DeviceModel::DeviceModel(ModelSpec spec) : spec_(std::move(spec)) {
  const ModelSpec& s = spec_;
  validate_spec(s);
  if (s.qk_norm) throw std::invalid_argument("the device decoder has no q/k head norms (Qwen3) yet: run it on the CPU");
  if (s.post_norms || s.gelu_gate || s.embed_scale > 0 || s.attn_scale > 0 || s.attn_softcap > 0 ||
      s.final_softcap > 0 || !s.layer_window.empty() || !s.layer_rope_inv_freq.empty() ||
      s.rope_attention_factor != 1.0f)
    throw std::invalid_argument("the device decoder does not run Gemma's ops (post norms, GeGLU, scaled embeddings, "
                                "soft caps, per-layer windows and rope) or LongRoPE's attention factor yet: run it on the CPU");
  if (s.sliding_window > 0 && s.sliding_window < s.max_seq)
    throw std::invalid_argument("the device decoder has no sliding-window attention yet (window " +
                                std::to_string(s.sliding_window) + " < context " + std::to_string(s.max_seq) +
                                "): run it on the CPU");
  if (s.head_dim > 256) throw std::invalid_argument("invalid model spec: the device attention takes head_dim up to 256");
  require_device();
  if (s.pos == PosKind::kRope) inv_freq_ = Buffer::upload(s.rope_inv_freq.data(), s.rope_inv_freq.size() * 4);
  layers_.resize(size_t(s.n_layers));
  const char* env = std::getenv("FASTLM_CUDA_GRAPHS");
  use_graphs_ = !(env && std::string(env) == "0");
}

DeviceModel::Linear DeviceModel::upload_linear(const void* w, DType wt, int64_t N, int64_t K,
                                               const float* bias) const {
  Linear l;
  l.wt = dtype_of(wt);
  l.w = Buffer::upload(w, size_t(N * K) * dtype_size(l.wt));
  if (bias) l.bias = Buffer::upload(bias, size_t(N) * 4);
  l.N = N, l.K = K, l.set = true;
  return l;
}

void DeviceModel::check_linear_shape(int64_t layer, Proj proj, int64_t N, int64_t K) const {
  if (complete_) throw std::invalid_argument("weights cannot be replaced once the model has run (load a new one)");
  fastlm::check_linear_shape(spec_, layer, proj, N, K);
}

void DeviceModel::set_linear(int64_t layer, Proj proj, const void* w, DType wt, int64_t N, int64_t K,
                             const float* bias) {
  check_linear_shape(layer, proj, N, K);
  layers_[size_t(layer)].proj[int(proj)] = upload_linear(w, wt, N, K, bias);
}

void DeviceModel::set_norm(int64_t layer, int which, const float* w, const float* b) {
  const size_t bytes = size_t(spec_.hidden) * 4;
  Buffer *dw, *db;
  check_norm_index(spec_, layer, which);
  if (layer == -1) {
    dw = &final_w_, db = &final_b_;
  } else {
    dw = &layers_[size_t(layer)].norm_w[which], db = &layers_[size_t(layer)].norm_b[which];
  }
  *dw = Buffer::upload(w, bytes);
  *db = b ? Buffer::upload(b, bytes) : Buffer();
}

void DeviceModel::set_embedding(const void* w, DType wt) {
  embedding_type_ = dtype_of(wt);
  embedding_ = Buffer::upload(w, size_t(spec_.vocab * spec_.hidden) * dtype_size(embedding_type_));
  has_embedding_ = true;
}

void DeviceModel::set_position_embedding(const float* w, int64_t n_positions) {
  const std::string err = position_embedding_error(spec_, n_positions);
  if (!err.empty()) throw std::invalid_argument(err);
  pos_embedding_ = Buffer::upload(w, size_t(spec_.max_seq * spec_.hidden) * 4);
}

void DeviceModel::set_lm_head(const void* w, DType wt) {
  head_ = upload_linear(w, wt, spec_.vocab, spec_.hidden, nullptr);
}

void DeviceModel::tie_lm_head() {
  if (!has_embedding_) throw std::invalid_argument("tie_lm_head needs the embedding first");
  head_ = Linear();
  head_.wt = embedding_type_;
  head_.w = std::move(embedding_);  // one copy serves both: rows for lookups, the matrix for the head
  head_.N = spec_.vocab, head_.K = spec_.hidden, head_.set = true;
  tied_ = true;
}

std::vector<std::string> DeviceModel::missing() const {
  if (complete_) return {};  // checked at the first step (q|k|v, gate|up are fused since)
  struct Held : WeightsHeld {
    const DeviceModel& m;
    explicit Held(const DeviceModel& m) : m(m) {}
    bool linear(int64_t layer, Proj p) const override { return m.layers_[size_t(layer)].proj[int(p)].set; }
    bool norm(int64_t layer, int which) const override {
      return (layer < 0 ? m.final_w_ : m.layers_[size_t(layer)].norm_w[which]).get() != nullptr;
    }
    bool embedding() const override { return m.has_embedding_; }
    bool lm_head() const override { return m.head_.set; }
    bool position_embedding() const override { return m.pos_embedding_.get() != nullptr; }
  };
  return missing_weights(spec_, Held(*this));
}

size_t DeviceModel::weight_bytes() const {
  size_t total = embedding_.bytes() + pos_embedding_.bytes() + head_.w.bytes();
  for (const Layer& l : layers_) {
    for (const Linear& p : l.proj) total += p.w.bytes() + p.bias.bytes();
    total += l.qkv.w.bytes() + l.qkv.bias.bytes() + l.gate_up.w.bytes() + l.gate_up.bias.bytes();
  }
  return total;
}

// bf16 models keep a bf16 cache (half the memory, and FlashAttention reads it in prefill); the
// type is settled when the first slot is made, after the weights are in
DType DeviceModel::kv_type() const {
  if (!slots_.empty()) return kv_dt_;
  bool any = false, all_bf16 = true;
  for (const Layer& l : layers_)
    for (const Linear* p : {&l.qkv, &l.proj[int(Proj::kQ)], &l.proj[int(Proj::kK)], &l.proj[int(Proj::kV)]})
      if (p->set) any = true, all_bf16 &= p->wt == DType::kBF16;
  return any && all_bf16 ? DType::kBF16 : DType::kF32;
}

size_t DeviceModel::kv_bytes_per_slot() const {
  return size_t(2 * spec_.n_layers * spec_.n_kv_heads * spec_.max_seq * spec_.head_dim) * dtype_size(kv_type());
}

void DeviceModel::ensure_slots(int64_t n) {
  std::lock_guard<std::mutex> lock(slots_.mutex());  // the cache type is settled with the first slot, under the lock
  if (slots_.empty()) kv_dt_ = kv_type();
  slots_.ensure(n, [&] {
    std::unique_ptr<Slot> s(new Slot());
    s->kv = Buffer(kv_bytes_per_slot());
    return s;
  });
}

int64_t DeviceModel::slot_len(int64_t slot) const { return slots_.len(slot); }

void DeviceModel::truncate_slot(int64_t slot, int64_t len) { slots_.truncate_locked(slot, len); }

void DeviceModel::copy_slot(int64_t src, int64_t dst, int64_t len) {
  const size_t row = size_t(2 * spec_.n_kv_heads * spec_.head_dim) * dtype_size(kv_dt_), layer = spec_.max_seq * row;
  slots_.copy_locked(src, dst, len, [&](const Slot& a, Slot& b) {
    for (int64_t l = 0; l < spec_.n_layers; ++l)
      copy_device(static_cast<char*>(b.kv.get()) + l * layer, static_cast<const char*>(a.kv.get()) + l * layer, len * row);
  });
}

void DeviceModel::ensure_buffers(int64_t rows) {
  if (rows <= buf_rows_) return;
  graphs_.clear();  // they hold the old buffers' addresses
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden, H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, F = s.ffn;
  const int64_t widest = std::max({C, (H + 2 * Hkv) * D, 2 * F});
  x_ = Buffer(size_t(rows * C) * 4);
  h_ = Buffer(size_t(rows * C) * 4);
  qkv_ = Buffer(size_t(rows * (H + 2 * Hkv) * D) * 4);
  attn_ = Buffer(size_t(rows * H * D) * 4);
  tmp_ = Buffer(size_t(rows * C) * 4);
  gu_ = Buffer(size_t(rows * 2 * F) * 4);
  act_ = Buffer(size_t(rows * F) * 4);
  xb_ = Buffer(size_t(rows * widest) * 2);  // activations as bf16 for the tensor-core GEMM
  ws_ = Buffer(std::max<size_t>(attention_workspace(rows, H, D, s.max_seq), 1) * 4);
  args_ = Buffer(size_t(rows) * 16);
  logits_ = Buffer(size_t(rows * s.vocab) * 4);
  buf_rows_ = rows;
}

void DeviceModel::linear(const Linear& l, const float* x, int64_t M, float* y) {
  const float* b = l.bias.get() ? l.bias.f() : nullptr;
  if (M <= 8 || (l.wt == DType::kBF16 && l.K % 8)) {
    gemv(x, l.w.get(), l.wt, b, y, M, l.N, l.K);
  } else if (l.wt == DType::kBF16) {
    cast(x, DType::kF32, xb_.get(), DType::kBF16, M * l.K);
    gemm_tc(xb_.get(), l.w.get(), DType::kBF16, b, y, DType::kF32, M, l.N, l.K);
  } else {
    sgemm(x, l.w.f(), b, y, M, l.N, l.K);
  }
}

void DeviceModel::norm(const Buffer& w, const Buffer& b, const float* x, float* y, int64_t rows) {
  if (spec_.norm == NormKind::kRms)
    rms_norm(x, w.f(), y, rows, spec_.hidden, spec_.norm_eps);
  else
    layer_norm(x, w.f(), b.get() ? b.f() : nullptr, y, rows, spec_.hidden, spec_.norm_eps);
}

// parts of equal dtype and K, rows stacked on the device; biases zero-filled where a part has none
void DeviceModel::fuse(Linear& out, std::initializer_list<const Linear*> parts) {
  const Linear& first = **parts.begin();
  int64_t N = 0;
  bool any_bias = false;
  for (const Linear* p : parts) {
    if (!p->set || p->wt != first.wt || p->K != first.K) return;
    N += p->N;
    any_bias |= p->bias.get() != nullptr;
  }
  const size_t es = dtype_size(first.wt);
  Linear f;
  f.wt = first.wt, f.N = N, f.K = first.K, f.set = true;
  f.w = Buffer(size_t(N * f.K) * es);
  if (any_bias) {
    std::vector<float> zeros(size_t(N), 0.0f);
    f.bias = Buffer::upload(zeros.data(), size_t(N) * 4);
  }
  int64_t row = 0;
  for (const Linear* p : parts) {
    copy_device(static_cast<char*>(f.w.get()) + size_t(row * f.K) * es, p->w.get(), size_t(p->N * p->K) * es);
    if (p->bias.get()) copy_device(f.bias.f() + row, p->bias.get(), size_t(p->N) * 4);
    row += p->N;
  }
  out = std::move(f);
}

void DeviceModel::prefill(int64_t slot, const int32_t* tokens, int64_t T, float* logits, bool all_logits) {
  std::lock_guard<std::mutex> lock(slots_.mutex());
  slots_.check_prefill(slot, T, spec_.max_seq);
  for (int64_t t0 = 0; t0 < T; t0 += kStepRows) {
    const int64_t n = std::min(kStepRows, T - t0);
    const bool last = t0 + n == T;
    step(tokens + t0, n, std::vector<int64_t>(size_t(n), slot), all_logits ? 0 : n - 1,
         all_logits ? n : last ? 1 : 0, logits + (all_logits ? t0 * spec_.vocab : 0), false);
  }
}

void DeviceModel::decode(const int64_t* slots, const int32_t* tokens, int64_t B, float* logits) {
  std::lock_guard<std::mutex> lock(slots_.mutex());
  slots_.check_decode(slots, B, spec_.max_seq);
  for (int64_t b0 = 0; b0 < B; b0 += kStepRows) {  // more sequences than a step's buffers: in chunks
    const int64_t n = std::min(kStepRows, B - b0);
    step(tokens + b0, n, std::vector<int64_t>(slots + b0, slots + b0 + n), 0, n, logits + b0 * spec_.vocab, true);
  }
}

void DeviceModel::prepare() {
  const ModelSpec& s = spec_;
  auto miss = missing();
  if (!miss.empty()) throw std::invalid_argument("the model is missing weights: " + miss.front());
  for (Layer& L : layers_) {
    fuse(L.qkv, {&L.proj[int(Proj::kQ)], &L.proj[int(Proj::kK)], &L.proj[int(Proj::kV)]});
    if (s.mlp == MlpKind::kSwiGLU) fuse(L.gate_up, {&L.proj[int(Proj::kGate)], &L.proj[int(Proj::kUp)]});
    if (L.qkv.set) L.proj[int(Proj::kQ)] = Linear(), L.proj[int(Proj::kK)] = Linear(), L.proj[int(Proj::kV)] = Linear();
    if (L.gate_up.set) L.proj[int(Proj::kGate)] = Linear(), L.proj[int(Proj::kUp)] = Linear();
  }
  complete_ = true;
}

void DeviceModel::step(const int32_t* tokens, int64_t T, const std::vector<int64_t>& row_slots, int64_t out_row0,
                       int64_t n_out, float* logits, bool decode) {
  const ModelSpec& s = spec_;
  for (int64_t i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= s.vocab)
      throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                                  std::to_string(s.vocab) + ")");
  if (!complete_) prepare();
  ensure_buffers(T);

  // the step's tokens, positions and cache pointers go over in one copy; the kernels read them
  // there, so a decode step's launches are the same at every length and replay as a graph
  std::vector<int64_t> args(size_t(2 * T));
  int32_t* ids = reinterpret_cast<int32_t*>(args.data());
  int64_t max_keys = 0, run = 0;  // run: earlier rows of the same sequence (they lie together)
  for (int64_t i = 0; i < T; ++i) {
    Slot& sl = slots_.at(row_slots[size_t(i)]);
    run = i > 0 && row_slots[size_t(i - 1)] == row_slots[size_t(i)] ? run + 1 : 0;
    ids[i] = tokens[i];
    ids[T + i] = int32_t(sl.len + run);
    args[size_t(T + i)] = int64_t(reinterpret_cast<uintptr_t>(sl.kv.get()));
    max_keys = std::max<int64_t>(max_keys, ids[T + i] + 1);
  }
  copy_to_device(args_.get(), args.data(), args.size() * 8);

  if (decode && use_graphs_) {  // one graph per batch size and attention split count
    const std::pair<int64_t, int> key(T, attention_splits(max_keys));
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      Graph g = capture(T, max_keys);
      if (g) it = graphs_.emplace(key, std::move(g)).first;
    }
    if (it != graphs_.end()) {
      it->second.replay();
      ++graph_replays_;
    } else {
      forward(T, max_keys, out_row0, n_out, nullptr);
    }
  } else {
    forward(T, max_keys, out_row0, n_out, decode ? nullptr : &slots_.at(row_slots[0]));
  }
  for (int64_t i = 0; i < T; ++i) slots_.at(row_slots[size_t(i)]).len += 1;

  if (n_out == 0)
    synchronize();
  else
    copy_to_host(logits, logits_.get(), size_t(n_out * s.vocab) * 4);
}

// a decode step's launches recorded as a graph; a capture the driver refuses leaves graphs off for
// this model (said on stderr) and the step runs launch by launch
Graph DeviceModel::capture(int64_t T, int64_t max_keys) {
  wgmma_for_auto();  // settled first: its one-time check copies and synchronizes
  try {
    capture_begin();
    try {
      forward(T, max_keys, 0, T, nullptr);
    } catch (...) {
      capture_abort();
      throw;
    }
    return capture_end();
  } catch (const std::logic_error&) {
    throw;  // a copy or allocation inside the step: a bug here, not the driver's refusal
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "fastlm: CUDA graph capture failed (%s); decoding launch by launch\n", e.what());
    use_graphs_ = false;
    graphs_.clear();
    return Graph();
  }
}

void DeviceModel::forward(int64_t T, int64_t max_keys, int64_t out_row0, int64_t n_out, const Slot* prefill_seq) {
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden, H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, F = s.ffn;
  const int32_t* tok_d = static_cast<const int32_t*>(args_.get());
  const int32_t* pos_d = tok_d + T;
  void* const* caches = reinterpret_cast<void* const*>(tok_d + 2 * T);
  // a prefill chunk of a bf16 cache, a whole query tile or more: FlashAttention over the cache
  const bool flash = prefill_seq && kv_dt_ == DType::kBF16 && (D == 64 || D == 128) && T >= kFlashMinRows;
  flash_prefills_ += flash;
  float* x = x_.f();
  float* h = h_.f();
  const void* table = tied_ ? head_.w.get() : embedding_.get();
  embedding(tok_d, T, table, tied_ ? head_.wt : embedding_type_, s.vocab, C, x, nullptr);
  if (s.pos == PosKind::kLearned) {
    embedding(pos_d, T, pos_embedding_.get(), DType::kF32, s.max_seq, C, tmp_.f(), nullptr);
    add(x, tmp_.f(), x, T * C);
  }

  const int64_t kv_row = 2 * Hkv * D, kv_layer = s.max_seq * kv_row, qkv_w = (H + 2 * Hkv) * D;
  const bool rms = s.norm == NormKind::kRms;
  norm(layers_[0].norm_w[0], layers_[0].norm_b[0], x, h, T);
  for (int64_t li = 0; li < s.n_layers; ++li) {
    Layer& L = layers_[size_t(li)];
    float* qp = qkv_.f();
    const int64_t qs = qkv_w;
    if (L.qkv.set) {
      linear(L.qkv, h, T, qp);
    } else {  // parts of different dtypes: three launches into the same layout
      linear(L.proj[int(Proj::kQ)], h, T, attn_.f());
      copy_rows(attn_.f(), H * D, qp, qs, T, H * D);
      linear(L.proj[int(Proj::kK)], h, T, attn_.f());
      copy_rows(attn_.f(), Hkv * D, qp + H * D, qs, T, Hkv * D);
      linear(L.proj[int(Proj::kV)], h, T, attn_.f());
      copy_rows(attn_.f(), Hkv * D, qp + (H + Hkv) * D, qs, T, Hkv * D);
    }
    if (s.pos == PosKind::kRope)  // q's H heads and k's Hkv heads lie side by side in each row
      rope(qp, T, H + Hkv, D, qs, pos_d, inv_freq_.f(), s.rotary_dim, s.rope_interleaved);
    store_kv(qp + H * D, qs, caches, kv_dt_, li * kv_layer, kv_row, pos_d, T, kv_row);  // k|v in one copy
    if (flash) {  // q as bf16 (xb_ is free until the o projection), keys and values straight from the cache
      const auto* kc = static_cast<const uint16_t*>(prefill_seq->kv.get()) + li * kv_layer;
      copy_rows(qp, qs, xb_.get(), H * D, T, H * D, DType::kBF16);
      flash_attention(xb_.get(), H * D, kc, kc + Hkv * D, kv_row, attn_.f(), DType::kF32, DType::kBF16, T, max_keys,
                      H, Hkv, D, 1.0f / std::sqrt(float(D)), true);
    } else {
      cached_attention(qp, qs, caches, kv_dt_, li * kv_layer, Hkv * D, kv_row, pos_d, attn_.f(), T, max_keys, H, Hkv,
                       D, 1.0f / std::sqrt(float(D)), ws_.f());
    }
    linear(L.proj[int(Proj::kO)], attn_.f(), T, tmp_.f());
    add_norm(x, tmp_.f(), L.norm_w[1].f(), L.norm_b[1].get() ? L.norm_b[1].f() : nullptr, h, T, C, s.norm_eps, rms);

    if (s.mlp == MlpKind::kSwiGLU && L.gate_up.set) {
      linear(L.gate_up, h, T, gu_.f());
      swiglu_rows(gu_.f(), act_.f(), T, F);
    } else if (s.mlp == MlpKind::kSwiGLU) {
      linear(L.proj[int(Proj::kGate)], h, T, gu_.f());
      linear(L.proj[int(Proj::kUp)], h, T, act_.f());
      silu_mul(gu_.f(), act_.f(), act_.f(), T * F);
    } else {
      linear(L.proj[int(Proj::kUp)], h, T, act_.f());
      gelu_tanh(act_.f(), act_.f(), T * F);
    }
    linear(L.proj[int(Proj::kDown)], act_.f(), T, tmp_.f());
    if (li + 1 < s.n_layers) {  // the residual, then the next layer's first norm
      const Layer& N = layers_[size_t(li + 1)];
      add_norm(x, tmp_.f(), N.norm_w[0].f(), N.norm_b[0].get() ? N.norm_b[0].f() : nullptr, h, T, C, s.norm_eps, rms);
    } else {
      add(x, tmp_.f(), x, T * C);
    }
  }
  if (n_out == 0) return;
  // the head only for the rows whose logits are wanted
  norm(final_w_, final_b_, x + out_row0 * C, h, n_out);
  linear(head_, h, n_out, logits_.f());
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
