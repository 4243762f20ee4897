// The decoder on the GPU (see model.h): the CPU executor's step (runtime/model.cpp), kernel by
// kernel. Linear layers: the GEMV kernel for up to 8 rows (decode: the weight read once), bf16
// weights on tensor cores above that, fp32 weights on the SGEMM. q|k|v and gate|up are fused
// into one weight each at the first step. The KV cache is fp32, (max_seq, 2, Hkv, D) per layer: a
// step's k|v rows go in with one copy. Each residual add is fused with the norm that follows it,
// and rope turns q and k (adjacent heads of the q|k|v row) in one launch: 9 launches a layer.
#include "cuda/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace fastlm {
namespace FASTLM_GPU_NS {
namespace {

constexpr int64_t kStepRows = 512;  // prefill rows per step

DType dtype_of(WeightType wt) { return wt == WeightType::kBF16 ? DType::kBF16 : DType::kF32; }

}  // namespace

DeviceModel::DeviceModel(ModelSpec spec) : spec_(std::move(spec)) {
  const ModelSpec& s = spec_;
  validate_spec(s);
  if (s.head_dim > 256) throw std::invalid_argument("invalid model spec: the device attention takes head_dim up to 256");
  require_device();
  if (s.pos == PosKind::kRope) inv_freq_ = Buffer::upload(s.rope_inv_freq.data(), s.rope_inv_freq.size() * 4);
  layers_.resize(size_t(s.n_layers));
}

DeviceModel::Linear DeviceModel::upload_linear(const void* w, WeightType wt, int64_t N, int64_t K,
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

void DeviceModel::set_linear(int64_t layer, Proj proj, const void* w, WeightType wt, int64_t N, int64_t K,
                             const float* bias) {
  check_linear_shape(layer, proj, N, K);
  layers_[size_t(layer)].proj[int(proj)] = upload_linear(w, wt, N, K, bias);
}

void DeviceModel::set_norm(int64_t layer, int which, const float* w, const float* b) {
  const size_t bytes = size_t(spec_.hidden) * 4;
  Buffer *dw, *db;
  if (layer == -1) {
    dw = &final_w_, db = &final_b_;
  } else {
    if (layer < 0 || layer >= spec_.n_layers || which < 0 || which > 1) throw std::invalid_argument("norm index out of range");
    dw = &layers_[size_t(layer)].norm_w[which], db = &layers_[size_t(layer)].norm_b[which];
  }
  *dw = Buffer::upload(w, bytes);
  *db = b ? Buffer::upload(b, bytes) : Buffer();
}

void DeviceModel::set_embedding(const void* w, WeightType wt) {
  embedding_type_ = dtype_of(wt);
  embedding_ = Buffer::upload(w, size_t(spec_.vocab * spec_.hidden) * dtype_size(embedding_type_));
  has_embedding_ = true;
}

void DeviceModel::set_position_embedding(const float* w, int64_t n_positions) {
  if (n_positions < spec_.max_seq)
    throw std::invalid_argument("the position embedding has " + std::to_string(n_positions) +
                                " rows, fewer than the context (" + std::to_string(spec_.max_seq) + ")");
  pos_embedding_ = Buffer::upload(w, size_t(spec_.max_seq * spec_.hidden) * 4);
}

void DeviceModel::set_lm_head(const void* w, WeightType wt) {
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
  std::vector<std::string> out;
  if (complete_) return out;  // checked at the first step (q|k|v, gate|up are fused since)
  for (int64_t i = 0; i < spec_.n_layers; ++i) {
    const Layer& l = layers_[size_t(i)];
    for (int p = 0; p < int(Proj::kCount); ++p) {
      if (spec_.mlp == MlpKind::kGelu && Proj(p) == Proj::kGate) continue;
      if (!l.proj[p].set)
        out.push_back("layer " + std::to_string(i) + " " + proj_name(Proj(p)));
    }
    for (int w = 0; w < 2; ++w)
      if (!l.norm_w[w].get()) out.push_back("layer " + std::to_string(i) + (w ? " mlp norm" : " attention norm"));
  }
  if (!final_w_.get()) out.push_back("final norm");
  if (!has_embedding_) out.push_back("embedding");
  if (!head_.set) out.push_back("lm head");
  if (spec_.pos == PosKind::kLearned && !pos_embedding_.get()) out.push_back("position embedding");
  return out;
}

size_t DeviceModel::weight_bytes() const {
  size_t total = embedding_.bytes() + pos_embedding_.bytes() + head_.w.bytes();
  for (const Layer& l : layers_) {
    for (const Linear& p : l.proj) total += p.w.bytes() + p.bias.bytes();
    total += l.qkv.w.bytes() + l.qkv.bias.bytes() + l.gate_up.w.bytes() + l.gate_up.bias.bytes();
  }
  return total;
}

size_t DeviceModel::kv_bytes_per_slot() const {
  return size_t(2 * spec_.n_layers * spec_.n_kv_heads * spec_.max_seq * spec_.head_dim) * 4;
}

void DeviceModel::ensure_slots(int64_t n) {
  while (int64_t(slots_.size()) < n) {
    std::unique_ptr<Slot> s(new Slot());
    s->kv = Buffer(kv_bytes_per_slot());
    slots_.push_back(std::move(s));
  }
}

void DeviceModel::check_slot(int64_t slot) const { check_slot_index(slot, slots_.size()); }

int64_t DeviceModel::slot_len(int64_t slot) const {
  check_slot(slot);
  return slots_[size_t(slot)]->len;
}

void DeviceModel::truncate_slot(int64_t slot, int64_t len) {
  check_slot(slot);
  Slot& s = *slots_[size_t(slot)];
  check_truncate(s.len, len);
  s.len = len;
}

void DeviceModel::copy_slot(int64_t src, int64_t dst, int64_t len) {
  check_slot(src);
  check_slot(dst);
  const Slot& a = *slots_[size_t(src)];
  Slot& b = *slots_[size_t(dst)];
  check_copy(a.len, len);
  if (src != dst && len > 0) {
    const int64_t row = 2 * spec_.n_kv_heads * spec_.head_dim, layer = spec_.max_seq * row;
    for (int64_t l = 0; l < spec_.n_layers; ++l) copy_rows(a.kv.f() + l * layer, row, b.kv.f() + l * layer, row, len, row);
  }
  b.len = len;
}

void DeviceModel::ensure_buffers(int64_t rows) {
  if (rows <= buf_rows_) return;
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
  ids_ = Buffer(size_t(2 * rows) * 4);
  sel_ = Buffer(size_t(rows * C) * 4);
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
  check_slot(slot);
  if (T <= 0) throw std::invalid_argument("prefill needs at least one token");
  Slot& s = *slots_[size_t(slot)];
  if (s.len + T > spec_.max_seq)
    throw std::invalid_argument("the sequence would reach " + std::to_string(s.len + T) +
                                " positions, beyond the context of " + std::to_string(spec_.max_seq));
  for (int64_t t0 = 0; t0 < T; t0 += kStepRows) {
    const int64_t n = std::min(kStepRows, T - t0);
    std::vector<int64_t> rows;
    if (all_logits) {
      for (int64_t i = 0; i < n; ++i) rows.push_back(i);
    } else if (t0 + n == T) {
      rows.push_back(n - 1);
    }
    step(tokens + t0, n, {Group{slot, 0, n}}, rows.data(), int64_t(rows.size()),
         logits + (all_logits ? t0 * spec_.vocab : 0));
  }
}

void DeviceModel::decode(const int64_t* slots, const int32_t* tokens, int64_t B, float* logits) {
  std::vector<Group> groups;
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b) {
    check_slot(slots[b]);
    for (int64_t c = 0; c < b; ++c)
      if (slots[c] == slots[b]) throw std::invalid_argument("decode got slot " + std::to_string(slots[b]) + " twice");
    if (slots_[size_t(slots[b])]->len + 1 > spec_.max_seq)
      throw std::invalid_argument("slot " + std::to_string(slots[b]) + " is full (context " +
                                  std::to_string(spec_.max_seq) + ")");
    groups.push_back(Group{slots[b], b, 1});
    rows.push_back(b);
  }
  for (int64_t b0 = 0; b0 < B; b0 += kStepRows) {  // more sequences than a step's buffers: in chunks
    const int64_t n = std::min(kStepRows, B - b0);
    std::vector<Group> g(groups.begin() + b0, groups.begin() + b0 + n);
    for (auto& x : g) x.row0 -= b0;
    std::vector<int64_t> r(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) r[size_t(i)] = i;
    step(tokens + b0, n, g, r.data(), n, logits + b0 * spec_.vocab);
  }
}

void DeviceModel::step(const int32_t* tokens, int64_t T, const std::vector<Group>& groups, const int64_t* out_rows,
                       int64_t n_out, float* logits) {
  const ModelSpec& s = spec_;
  const int64_t C = s.hidden, H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, F = s.ffn;
  for (int64_t i = 0; i < T; ++i)
    if (tokens[i] < 0 || tokens[i] >= s.vocab)
      throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                                  std::to_string(s.vocab) + ")");
  if (!complete_) {
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
  ensure_buffers(T);

  // the tokens and their positions go over in one copy
  std::vector<int32_t> ids(static_cast<size_t>(2 * T));
  std::copy(tokens, tokens + T, ids.begin());
  for (const Group& g : groups)
    for (int64_t i = 0; i < g.n; ++i) ids[size_t(T + g.row0 + i)] = int32_t(slots_[size_t(g.slot)]->len + i);
  copy_to_device(ids_.get(), ids.data(), ids.size() * 4);
  const int32_t* tok_d = static_cast<const int32_t*>(ids_.get());
  const int32_t* pos_d = tok_d + T;
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
    float* kp = qp + H * D;
    if (s.pos == PosKind::kRope)  // q's H heads and k's Hkv heads lie side by side in each row
      rope(qp, T, H + Hkv, D, qs, pos_d, inv_freq_.f(), s.rotary_dim,
           s.rope_interleaved);
    for (const Group& g : groups) {
      Slot& sl = *slots_[size_t(g.slot)];
      float* kv = sl.kv.f() + li * kv_layer;
      copy_rows(kp + g.row0 * qs, qs, kv + sl.len * kv_row, kv_row, g.n, kv_row);  // k|v in one copy
      attention(qp + g.row0 * qs, qs, kv, kv + Hkv * D, kv_row, attn_.f() + g.row0 * H * D, g.n, sl.len + g.n, H,
                Hkv, D, 1.0f / std::sqrt(float(D)), true, ws_.f());
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
  for (const Group& g : groups) slots_[size_t(g.slot)]->len += g.n;

  if (n_out == 0) {
    synchronize();
    return;
  }
  // the head only for the rows whose logits are wanted
  bool contiguous = true;
  for (int64_t i = 0; i < n_out; ++i) contiguous &= out_rows[i] == out_rows[0] + i;
  const float* sel = x + out_rows[0] * C;
  if (!contiguous) {
    for (int64_t i = 0; i < n_out; ++i) copy_rows(x + out_rows[i] * C, C, sel_.f() + i * C, C, 1, C);
    sel = sel_.f();
  }
  norm(final_w_, final_b_, sel, h, n_out);
  linear(head_, h, n_out, logits_.f());
  copy_to_host(logits, logits_.get(), size_t(n_out * s.vocab) * 4);
}

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
