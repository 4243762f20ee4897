#include "runtime/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "base/threadpool.h"
#include "kernels/dispatch.h"

namespace fastlm {
namespace {

constexpr int64_t kChunk = 256;  // prefill rows per step: buffers stay small, GEMMs stay efficient
// decode rows per step: the kernels' few-row paths (kFewRows, kMaxRows, kDequantMinRows - 1) end
// here, so a sequence decodes to the same bits in a batch of any size
constexpr int64_t kDecodeRows = 16;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

enum Op { kOpEmbed, kOpNorm, kOpLinear, kOpRope, kOpKV, kOpAttention, kOpPointwise, kOpHead, kOpCount };
const char* kOpNames[kOpCount] = {"embed", "norm", "linear", "rope", "kv_copy", "attention", "pointwise", "head"};

}  // namespace

// adds the time since the last mark to an op's total, when profiling
class Model::Stopwatch {
 public:
  Stopwatch(bool on, double* totals) : on_(on), totals_(totals) {
    if (on_) t_ = std::chrono::steady_clock::now();
  }
  void mark(Op op) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    totals_[op] += std::chrono::duration<double>(now - t_).count();
    t_ = now;
  }

 private:
  bool on_;
  double* totals_;
  std::chrono::steady_clock::time_point t_;
};

struct Model::Linear {
  std::unique_ptr<uint8_t, FreeDeleter> packed;  // float panels, or an owned copy of quantized records
  int64_t N = 0, K = 0;
  DType wt = DType::kF32;
  std::vector<float> bias;
  bool set = false;
  // quantized: the records (borrowed, or `packed` when owned); a fused linear lists its parts
  bool quant = false;
  std::vector<QWeight> parts;
};

struct Model::Layer {
  Linear proj[int(Proj::kCount)];
  // before attention, before the MLP, q and k heads (qk_norm), after attention and after the MLP (post_norms)
  std::vector<float> norm_w[6], norm_b[6];
  // q|k|v and gate|up packed as one weight each (their panels back to back), when every part's
  // width is a whole number of panels: one pass over the input and one GEMV call instead of 3 / 2
  Linear qkv, gate_up;
};

struct Model::Slot {
  std::unique_ptr<float, FreeDeleter> k, v;  // (n_layers, Hkv, max_seq, D), pages touched lazily
  int64_t len = 0;
};

Model::Model(ModelSpec spec) : spec_(std::move(spec)), table_(&kernels()) {
  const ModelSpec& s = spec_;
  validate_spec(s);
  layers_.resize(size_t(s.n_layers));
  head_.reset(new Linear());
}

Model::~Model() = default;

void Model::set_linear(int64_t layer, Proj proj, const void* w, DType wt, int64_t N, int64_t K,
                       const float* bias) {
  check_linear_shape(layer, proj, N, K);
  Linear& l = layers_[size_t(layer)].proj[int(proj)];
  size_t bytes = size_t(packed_weight_elems(N, K, table_->pack_nr)) * dtype_size(wt);
  l.packed.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  if (!l.packed) throw std::bad_alloc();
  table_->pack_weight(w, wt, N, K, l.packed.get());
  l.quant = false;
  l.parts.clear();
  l.N = N;
  l.K = K;
  l.wt = wt;
  l.bias.assign(bias ? bias : nullptr, bias ? bias + N : nullptr);
  l.set = true;
}

void Model::check_linear_shape(int64_t layer, Proj proj, int64_t N, int64_t K) const {
  if (complete_) throw std::invalid_argument("weights cannot be replaced once the model has run (load a new one)");
  fastlm::check_linear_shape(spec_, layer, proj, N, K);
}

namespace {
// a quantized weight held by `l`: borrowed in place, or copied into memory the model owns
template <typename L>
void hold_quant(L& l, const uint8_t* data, QType type, int64_t N, int64_t K, int64_t G, const float* bias,
                bool borrow) {
  const size_t bytes = size_t(N * q_row_bytes(type, K, G));
  l.packed.reset();
  if (!borrow) {
    l.packed.reset(static_cast<uint8_t*>(std::malloc(bytes)));
    if (!l.packed) throw std::bad_alloc();
    std::memcpy(l.packed.get(), data, bytes);
    data = l.packed.get();
  }
  l.N = N;
  l.K = K;
  l.bias.assign(bias ? bias : nullptr, bias ? bias + N : nullptr);
  l.quant = true;
  l.parts = {QWeight{data, type, N, K, G, l.bias.empty() ? nullptr : l.bias.data()}};
  l.set = true;
}
}  // namespace

void Model::set_linear_q(int64_t layer, Proj proj, const uint8_t* data, QType type, int64_t N, int64_t K, int64_t G,
                         const float* bias, bool borrow) {
  check_linear_shape(layer, proj, N, K);
  hold_quant(layers_[size_t(layer)].proj[int(proj)], data, type, N, K, G, bias, borrow);
}

void Model::set_embedding_q(const uint8_t* data, QType type, int64_t G, bool borrow) {
  if (complete_) throw std::invalid_argument("weights cannot be replaced once the model has run (load a new one)");
  qembedding_.reset(new Linear());
  hold_quant(*qembedding_, data, type, spec_.vocab, spec_.hidden, G, nullptr, borrow);
  embedding_.clear();
  has_embedding_ = true;
}

void Model::set_lm_head_q(const uint8_t* data, QType type, int64_t G, bool borrow) {
  if (complete_) throw std::invalid_argument("weights cannot be replaced once the model has run (load a new one)");
  hold_quant(*head_, data, type, spec_.vocab, spec_.hidden, G, nullptr, borrow);
}

void Model::set_norm(int64_t layer, int which, const float* w, const float* b) {
  const int64_t C = norm_size(spec_, layer, which);
  std::vector<float>* dw;
  std::vector<float>* db;
  if (layer == -1) {
    dw = &final_norm_w_;
    db = &final_norm_b_;
  } else {
    dw = &layers_[size_t(layer)].norm_w[which];
    db = &layers_[size_t(layer)].norm_b[which];
  }
  dw->assign(w, w + C);
  if (b) db->assign(b, b + C); else db->clear();
}

void Model::set_embedding(const void* w, DType wt) {
  size_t bytes = size_t(spec_.vocab * spec_.hidden) * dtype_size(wt);
  embedding_.assign(static_cast<const uint8_t*>(w), static_cast<const uint8_t*>(w) + bytes);
  embedding_type_ = wt;
  qembedding_.reset();
  has_embedding_ = true;
}

void Model::set_position_embedding(const float* w, int64_t n_positions) {
  const std::string err = position_embedding_error(spec_, n_positions);
  if (!err.empty()) throw std::invalid_argument(err);
  position_embedding_.assign(w, w + spec_.max_seq * spec_.hidden);
}

void Model::set_lm_head(const void* w, DType wt) {
  const int64_t N = spec_.vocab, K = spec_.hidden;
  size_t bytes = size_t(packed_weight_elems(N, K, table_->pack_nr)) * dtype_size(wt);
  head_->packed.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
  if (!head_->packed) throw std::bad_alloc();
  table_->pack_weight(w, wt, N, K, head_->packed.get());
  head_->quant = false;
  head_->parts.clear();
  head_->N = N;
  head_->K = K;
  head_->wt = wt;
  head_->set = true;
}

void Model::set_lm_head_rows(const void* w, DType wt, int64_t r0, int64_t n) {
  if (complete_) throw std::invalid_argument("weights cannot be replaced once the model has run (load a new one)");
  const int64_t N = spec_.vocab, K = spec_.hidden, nr = table_->pack_nr;
  if (r0 < 0 || n <= 0 || r0 + n > N || r0 % nr || (n % nr && r0 + n != N))
    throw std::invalid_argument("lm_head rows [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                                ") must start at a multiple of " + std::to_string(nr) + " and end at one or at " +
                                std::to_string(N));
  if (r0 == 0) {
    size_t bytes = size_t(packed_weight_elems(N, K, nr)) * dtype_size(wt);
    head_->packed.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
    if (!head_->packed) throw std::bad_alloc();
    head_->set = false;
    head_->wt = wt;
    head_rows_ = 0;
  } else if (!head_->packed || head_->quant || r0 != head_rows_ || wt != head_->wt) {
    throw std::invalid_argument("lm_head rows must be set in order from row 0, in one dtype");
  }
  table_->pack_weight(w, wt, n, K, head_->packed.get() + size_t(r0 * K) * dtype_size(wt));
  head_rows_ = r0 + n;
  if (head_rows_ == N) {
    head_->quant = false;
    head_->parts.clear();
    head_->N = N;
    head_->K = K;
    head_->set = true;
  }
}

void Model::tie_lm_head() {
  if (!has_embedding_) throw std::invalid_argument("tie_lm_head needs the embedding first");
  if (qembedding_) {  // one set of quantized records serves both
    head_->N = qembedding_->N;
    head_->K = qembedding_->K;
    head_->quant = true;
    head_->parts = qembedding_->parts;
    head_->set = true;
    tied_ = true;
    return;
  }
  set_lm_head(embedding_.data(), embedding_type_);
  std::vector<uint8_t>().swap(embedding_);  // rows now come from the packed head
  tied_ = true;
}

void Model::tie_embedding() {
  if (!head_->set || head_->quant)
    throw std::invalid_argument("tie_embedding needs a float lm_head first (a quantized one: set_embedding_q, tie_lm_head)");
  std::vector<uint8_t>().swap(embedding_);
  qembedding_.reset();
  has_embedding_ = true;
  tied_ = true;
}

std::vector<std::string> Model::missing() const {
  struct Held : WeightsHeld {
    const Model& m;
    explicit Held(const Model& m) : m(m) {}
    bool linear(int64_t layer, Proj p) const override { return m.layers_[size_t(layer)].proj[int(p)].set; }
    bool norm(int64_t layer, int which) const override {
      return !(layer < 0 ? m.final_norm_w_ : m.layers_[size_t(layer)].norm_w[which]).empty();
    }
    bool embedding() const override { return m.has_embedding_; }
    bool lm_head() const override { return m.head_->set; }
    bool position_embedding() const override { return !m.position_embedding_.empty(); }
  };
  return missing_weights(spec_, Held(*this));
}

size_t Model::weight_bytes() const {
  size_t total = embedding_.size() + position_embedding_.size() * 4;
  auto add = [&](const Linear& l) {  // parts folded into a fused weight hold no memory of their own
    if (l.set && l.quant && l.parts.size() == 1) {
      const QWeight& q = l.parts[0];
      total += size_t(q.N * q_row_bytes(q.type, q.K, q.G)) + l.bias.size() * 4;
      return;
    }
    if (l.set && l.packed && !l.quant)
      total += size_t(packed_weight_elems(l.N, l.K, table_->pack_nr)) * dtype_size(l.wt) + l.bias.size() * 4;
  };
  for (const Layer& l : layers_) {
    for (const Linear& p : l.proj) add(p);
    add(l.qkv);
    add(l.gate_up);
  }
  if (qembedding_) add(*qembedding_);
  if (!(tied_ && qembedding_)) add(*head_);
  return total;
}

size_t Model::kv_bytes_per_slot() const {
  return size_t(2 * spec_.n_layers * spec_.n_kv_heads * spec_.max_seq * spec_.head_dim) * sizeof(float);
}

void Model::ensure_slots(int64_t n) {
  slots_.ensure_locked(n, [&] {
    std::unique_ptr<Slot> s(new Slot());
    size_t elems = kv_bytes_per_slot() / sizeof(float) / 2;
    // calloc: the pages of positions never used are never touched
    s->k.reset(static_cast<float*>(std::calloc(elems, sizeof(float))));
    s->v.reset(static_cast<float*>(std::calloc(elems, sizeof(float))));
    if (!s->k || !s->v) throw std::bad_alloc();
    return s;
  });
}

int64_t Model::slot_len(int64_t slot) const { return slots_.len(slot); }

void Model::truncate_slot(int64_t slot, int64_t len) { slots_.truncate_locked(slot, len); }

void Model::copy_slot(int64_t src, int64_t dst, int64_t len) {
  const int64_t D = spec_.head_dim, S = spec_.max_seq, rows = spec_.n_layers * spec_.n_kv_heads;
  slots_.copy_locked(src, dst, len, [&](const Slot& a, Slot& b) {
    for (int64_t r = 0; r < rows; ++r) {  // each (layer, kv head) holds its positions contiguously
      std::memcpy(b.k.get() + r * S * D, a.k.get() + r * S * D, size_t(len * D) * sizeof(float));
      std::memcpy(b.v.get() + r * S * D, a.v.get() + r * S * D, size_t(len * D) * sizeof(float));
    }
  });
}

void Model::fuse_projections() {
  const int nr = table_->pack_nr;
  auto fuse_q = [&](Linear& out, std::initializer_list<Linear*> parts) {  // no copy: one call over the parts
    const Linear& first = **parts.begin();
    for (Linear* l : parts) {
      if (!l->set || !l->quant || l->parts[0].type != first.parts[0].type || l->parts[0].G != first.parts[0].G ||
          l->K != first.K)
        return;
    }
    out.N = 0;
    for (Linear* l : parts) {
      out.parts.push_back(l->parts[0]);
      out.N += l->N;
    }
    out.K = first.K;
    out.quant = true;
    out.set = true;
  };
  auto fuse = [&](Linear& out, std::initializer_list<Linear*> parts) {
    if ((*parts.begin())->quant) return fuse_q(out, parts);
    int64_t N = 0;
    for (Linear* l : parts) {
      if (!l->set || l->quant || l->N % nr != 0 || l->wt != (*parts.begin())->wt || l->K != (*parts.begin())->K) return;
      N += l->N;
    }
    const Linear& first = **parts.begin();
    const size_t esz = dtype_size(first.wt);
    size_t bytes = size_t(N * first.K) * esz;
    out.packed.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
    if (!out.packed) throw std::bad_alloc();
    bool any_bias = false;
    for (Linear* l : parts) any_bias = any_bias || !l->bias.empty();
    size_t off = 0;
    for (Linear* l : parts) {
      const size_t n = size_t(l->N * l->K) * esz;
      std::memcpy(out.packed.get() + off, l->packed.get(), n);
      off += n;
      if (any_bias) {
        if (l->bias.empty()) out.bias.insert(out.bias.end(), size_t(l->N), 0.0f);
        else out.bias.insert(out.bias.end(), l->bias.begin(), l->bias.end());
      }
    }
    out.N = N;
    out.K = first.K;
    out.wt = first.wt;
    out.set = true;
    for (Linear* l : parts) {  // the parts are no longer read
      l->packed.reset();
      l->bias.clear();
    }
  };
  for (Layer& L : layers_) {
    fuse(L.qkv, {&L.proj[int(Proj::kQ)], &L.proj[int(Proj::kK)], &L.proj[int(Proj::kV)]});
    if (spec_.mlp == MlpKind::kSwiGLU) fuse(L.gate_up, {&L.proj[int(Proj::kGate)], &L.proj[int(Proj::kUp)]});
  }
}

void Model::ensure_buffers(int64_t rows) {
  if (rows <= buf_rows_) return;
  const ModelSpec& s = spec_;
  x_.assign(size_t(rows * s.hidden), 0.0f);
  h_.assign(size_t(rows * s.hidden), 0.0f);
  tmp_.assign(size_t(rows * s.hidden), 0.0f);
  sel_.assign(size_t(rows * s.hidden), 0.0f);
  q_.assign(size_t(rows * s.n_heads * s.head_dim), 0.0f);
  attn_.assign(size_t(rows * s.n_heads * s.head_dim), 0.0f);
  k_.assign(size_t(rows * s.n_kv_heads * s.head_dim), 0.0f);
  v_.assign(size_t(rows * s.n_kv_heads * s.head_dim), 0.0f);
  gate_.assign(size_t(rows * s.ffn), 0.0f);
  up_.assign(size_t(rows * s.ffn), 0.0f);
  qkv_.assign(size_t(rows * (s.n_heads + 2 * s.n_kv_heads) * s.head_dim), 0.0f);
  gu_.assign(size_t(rows * 2 * s.ffn), 0.0f);
  pos_.assign(size_t(rows), 0);
  buf_rows_ = rows;
}

void Model::linear(const Linear& l, const float* x, int64_t M, float* y) const {
  if (l.quant) {
    QMatmulArgs q{x, M, l.K, l.parts.data(), int(l.parts.size()), y, l.N};
    table_->q_matmul(q);
    return;
  }
  MatmulArgs a{x, M, l.K, l.N, l.packed.get(), l.wt, true, l.bias.empty() ? nullptr : l.bias.data(), y, nullptr};
  table_->matmul(a);
}

void Model::norm(const std::vector<float>& w, const std::vector<float>& b, const float* x, float* y,
                 int64_t rows) const {
  if (spec_.norm == NormKind::kRms) {
    table_->rms_norm(x, w.data(), y, rows, spec_.hidden, spec_.norm_eps);
  } else {
    table_->layer_norm(x, w.data(), b.empty() ? nullptr : b.data(), y, rows, spec_.hidden, spec_.norm_eps);
  }
}

std::vector<std::pair<std::string, double>> Model::profile() const {
  std::vector<std::pair<std::string, double>> out;
  for (int i = 0; i < kOpCount; ++i) out.emplace_back(kOpNames[i], prof_[i]);
  return out;
}

void Model::reset_profile() {
  for (double& t : prof_) t = 0.0;
}

void Model::prefill(int64_t slot, const int32_t* tokens, int64_t T, float* logits, bool all_logits) {
  std::lock_guard<std::mutex> lock(slots_.mutex());
  slots_.check_prefill(slot, T, spec_.max_seq);
  for (int64_t t0 = 0; t0 < T; t0 += kChunk) {
    const int64_t n = std::min(kChunk, T - t0);
    std::vector<Group> groups{{slot, 0, n}};
    std::vector<int64_t> out_rows;
    float* out = nullptr;
    if (all_logits) {
      for (int64_t i = 0; i < n; ++i) out_rows.push_back(i);
      out = logits + t0 * spec_.vocab;
    } else if (t0 + n == T) {
      out_rows.push_back(n - 1);
      out = logits;
    }
    step(tokens + t0, n, groups, out_rows.data(), int64_t(out_rows.size()), out);
  }
}

void Model::decode(const int64_t* slots, const int32_t* tokens, int64_t B, float* logits) {
  std::lock_guard<std::mutex> lock(slots_.mutex());
  slots_.check_decode(slots, B, spec_.max_seq);
  std::vector<Group> groups;
  for (int64_t b = 0; b < B; ++b) groups.push_back({slots[b], b, 1});
  for (int64_t b0 = 0; b0 < B; b0 += kDecodeRows) {  // larger batches run in steps of kDecodeRows
    const int64_t n = std::min(kDecodeRows, B - b0);
    std::vector<Group> g(groups.begin() + b0, groups.begin() + b0 + n);
    for (auto& gr : g) gr.row0 -= b0;
    std::vector<int64_t> rows(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) rows[size_t(i)] = i;
    step(tokens + b0, n, g, rows.data(), n, logits + b0 * spec_.vocab);
  }
}

// one forward step over T rows (see Group), as a list of named stages
void Model::step(const int32_t* tokens, int64_t T, const std::vector<Group>& groups, const int64_t* out_rows,
                 int64_t n_out, float* logits) {
  check_tokens(tokens, T);
  prepare();
  ensure_buffers(T);
  Stopwatch sw(profiling_, prof_);
  embed(tokens, T, groups, sw);
  for (int64_t li = 0; li < spec_.n_layers; ++li) {
    attention_block(li, T, groups, sw);
    mlp_block(li, T, sw);
  }
  for (const Group& g : groups) slots_.at(g.slot).len += g.n;
  if (n_out > 0) head(out_rows, n_out, logits, sw);
}

void Model::check_tokens(const int32_t* tokens, int64_t T) const {
  for (int64_t i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= spec_.vocab)
      throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                                  std::to_string(spec_.vocab) + ")");
}

// at the first step: every weight there, then q|k|v and gate|up fused
void Model::prepare() {
  if (complete_) return;
  auto miss = missing();
  if (!miss.empty()) throw std::invalid_argument("the model is missing weights: " + miss.front());
  fuse_projections();
  complete_ = true;
}

// positions, then x = the rows' embeddings (plus learned positions)
void Model::embed(const int32_t* tokens, int64_t T, const std::vector<Group>& groups, Stopwatch& sw) {
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden;
  for (const Group& g : groups) {
    const int64_t len = slots_.at(g.slot).len;
    for (int64_t i = 0; i < g.n; ++i) pos_[size_t(g.row0 + i)] = len + i;
  }
  for (int64_t r = 0; r < T; ++r) {
    float* xr = x_.data() + r * C;
    if (qembedding_) {
      table_->q_dequantize_row(qembedding_->parts[0], tokens[r], xr);
    } else if (tied_) {
      table_->packed_row(head_->packed.get(), head_->wt, s.vocab, C, tokens[r], xr);
    } else if (embedding_type_ == DType::kF32) {
      std::memcpy(xr, embedding_.data() + size_t(tokens[r]) * C * 4, size_t(C) * 4);
    } else {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(embedding_.data()) + size_t(tokens[r]) * C;
      for (int64_t c = 0; c < C; ++c) {
        uint32_t u = uint32_t(src[c]) << 16;
        std::memcpy(xr + c, &u, 4);
      }
    }
    if (s.embed_scale > 0)
      for (int64_t c = 0; c < C; ++c) xr[c] *= s.embed_scale;
    if (s.pos == PosKind::kLearned) {
      const float* pe = position_embedding_.data() + pos_[size_t(r)] * C;
      for (int64_t c = 0; c < C; ++c) xr[c] += pe[c];
    }
  }
  sw.mark(kOpEmbed);
}

// x += o(attention(rope(q), rope(k) and v into the cache)) of norm(x)
void Model::attention_block(int64_t li, int64_t T, const std::vector<Group>& groups, Stopwatch& sw) {
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden, H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim;
  const Layer& L = layers_[size_t(li)];
  float* x = x_.data();
  float* h = h_.data();
  norm(L.norm_w[0], L.norm_b[0], x, h, T);
  sw.mark(kOpNorm);
  // q, k, v rows: (T, H*D), (T, Hkv*D), (T, Hkv*D), in one fused buffer or three
  float *qp, *kp, *vp;
  int64_t qs, ks, vs;
  if (L.qkv.set) {
    linear(L.qkv, h, T, qkv_.data());
    qs = ks = vs = (H + 2 * Hkv) * D;
    qp = qkv_.data();
    kp = qp + H * D;
    vp = kp + Hkv * D;
  } else {
    linear(L.proj[int(Proj::kQ)], h, T, q_.data());
    linear(L.proj[int(Proj::kK)], h, T, k_.data());
    linear(L.proj[int(Proj::kV)], h, T, v_.data());
    qp = q_.data(), kp = k_.data(), vp = v_.data();
    qs = H * D, ks = vs = Hkv * D;
  }
  sw.mark(kOpLinear);
  if (s.qk_norm) {  // each row's heads are back to back (H x D, then Hkv x D): one call per row
    for (int64_t r = 0; r < T; ++r) {  // (few rows per call: the norm runs inline, no thread hand-off)
      table_->rms_norm(qp + r * qs, L.norm_w[2].data(), qp + r * qs, H, D, s.norm_eps);
      table_->rms_norm(kp + r * ks, L.norm_w[3].data(), kp + r * ks, Hkv, D, s.norm_eps);
    }
    sw.mark(kOpNorm);
  }
  if (s.pos == PosKind::kRope) {
    const float* inv = s.layer_rope_inv_freq.empty() ? s.rope_inv_freq.data() : s.layer_rope_inv_freq[size_t(li)].data();
    table_->rope(qp, qs, pos_.data(), T, H, D, s.rotary_dim, inv, s.rope_interleaved);
    table_->rope(kp, ks, pos_.data(), T, Hkv, D, s.rotary_dim, inv, s.rope_interleaved);
    if (s.rope_attention_factor != 1.0f) {  // LongRoPE: cos and sin scaled, i.e. the rotated dims
      const float f = s.rope_attention_factor;
      for (int64_t r = 0; r < T; ++r) {
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < s.rotary_dim; ++i) qp[r * qs + h * D + i] *= f;
        for (int64_t h = 0; h < Hkv; ++h)
          for (int64_t i = 0; i < s.rotary_dim; ++i) kp[r * ks + h * D + i] *= f;
      }
    }
    sw.mark(kOpRope);
  }
  const int64_t kv_head_stride = s.max_seq * D;
  const int64_t kv_layer_stride = Hkv * kv_head_stride;
  for (const Group& g : groups) {
    Slot& sl = slots_.at(g.slot);
    float* kc = sl.k.get() + li * kv_layer_stride;
    float* vc = sl.v.get() + li * kv_layer_stride;
    for (int64_t i = 0; i < g.n; ++i) {  // (T, Hkv, D) rows into the (Hkv, max_seq, D) cache
      const int64_t r = g.row0 + i, p = sl.len + i;
      for (int64_t hk = 0; hk < Hkv; ++hk) {
        std::memcpy(kc + hk * kv_head_stride + p * D, kp + r * ks + hk * D, size_t(D) * 4);
        std::memcpy(vc + hk * kv_head_stride + p * D, vp + r * vs + hk * D, size_t(D) * 4);
      }
    }
    sw.mark(kOpKV);
    AttentionArgs a{qp + g.row0 * qs, kc, vc, attn_.data() + g.row0 * H * D, H, Hkv, g.n, sl.len + g.n, D,
                    D, qs, kv_head_stride, D, H * D, s.attn_scale > 0 ? s.attn_scale : 1.0f / std::sqrt(float(D)),
                    true, window_of(s, li), s.attn_softcap};
    table_->attention(a);
    sw.mark(kOpAttention);
  }
  linear(L.proj[int(Proj::kO)], attn_.data(), T, tmp_.data());
  sw.mark(kOpLinear);
  add_residual(L, 4, T, sw);
}

// x += out (tmp_), or x += norm(out) with the layer's post norm `which` (post_norms)
void Model::add_residual(const Layer& L, int which, int64_t T, Stopwatch& sw) {
  float* out = tmp_.data();
  if (spec_.post_norms) {
    norm(L.norm_w[which], L.norm_b[which], out, h_.data(), T);
    out = h_.data();
    sw.mark(kOpNorm);
  }
  table_->add(x_.data(), out, x_.data(), T * spec_.hidden);
  sw.mark(kOpPointwise);
}

// x += down(act(gate) * up), or down(gelu(up)), of norm(x)
void Model::mlp_block(int64_t li, int64_t T, Stopwatch& sw) {
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden, F = s.ffn;
  const Layer& L = layers_[size_t(li)];
  float* x = x_.data();
  float* h = h_.data();
  norm(L.norm_w[1], L.norm_b[1], x, h, T);
  sw.mark(kOpNorm);
  if (s.mlp == MlpKind::kSwiGLU && L.gate_up.set) {
    linear(L.gate_up, h, T, gu_.data());  // rows [gate | up]
    sw.mark(kOpLinear);
    float* gu = gu_.data();
    float* act = up_.data();
    auto gated = s.gelu_gate ? table_->gelu_mul : table_->silu_mul;
    if (T == 1) {
      gated(gu, gu + F, act, F);
    } else {
      parallel_for(T, [&](int64_t r) { gated(gu + r * 2 * F, gu + r * 2 * F + F, act + r * F, F); });
    }
  } else if (s.mlp == MlpKind::kSwiGLU) {
    linear(L.proj[int(Proj::kGate)], h, T, gate_.data());
    linear(L.proj[int(Proj::kUp)], h, T, up_.data());
    sw.mark(kOpLinear);
    (s.gelu_gate ? table_->gelu_mul : table_->silu_mul)(gate_.data(), up_.data(), up_.data(), T * F);
  } else {
    linear(L.proj[int(Proj::kUp)], h, T, up_.data());
    sw.mark(kOpLinear);
    table_->gelu_tanh(up_.data(), up_.data(), T * F);
  }
  sw.mark(kOpPointwise);
  linear(L.proj[int(Proj::kDown)], up_.data(), T, tmp_.data());
  sw.mark(kOpLinear);
  add_residual(L, 5, T, sw);
}

// logits = head(final_norm(x)) for the rows whose logits are wanted only
void Model::head(const int64_t* out_rows, int64_t n_out, float* logits, Stopwatch& sw) {
  const int64_t C = spec_.hidden;
  for (int64_t i = 0; i < n_out; ++i) std::memcpy(sel_.data() + i * C, x_.data() + out_rows[i] * C, size_t(C) * 4);
  norm(final_norm_w_, final_norm_b_, sel_.data(), h_.data(), n_out);
  linear(*head_, h_.data(), n_out, logits);
  if (spec_.final_softcap > 0) {  // Gemma 2: logits = cap * tanh(logits / cap)
    const float cap = spec_.final_softcap;
    parallel_range(n_out * spec_.vocab, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) logits[i] = cap * std::tanh(logits[i] / cap);
    });
  }
  sw.mark(kOpHead);
}

}  // namespace fastlm
