#include "model/spec.h"

#include <stdexcept>

namespace fastlm {
namespace {
constexpr int64_t kMaxDim = int64_t(1) << 24;        // any one size (positions, vocabulary, widths)
constexpr uint64_t kMaxKvBytes = uint64_t(1) << 40;  // one slot's KV cache
}  // namespace

const char* proj_name(Proj p) {
  static const char* names[] = {"q", "k", "v", "o", "gate", "up", "down"};
  return names[int(p)];
}

void validate_spec(const ModelSpec& s) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("invalid model spec: " + what);
  };
  need(s.n_layers > 0 && s.hidden > 0 && s.n_heads > 0 && s.n_kv_heads > 0 && s.head_dim > 0 && s.ffn > 0 &&
           s.vocab > 0 && s.max_seq > 0,
       "every size must be positive");
  need(s.n_layers <= kMaxDim && s.hidden <= kMaxDim && s.n_heads <= kMaxDim && s.n_kv_heads <= kMaxDim &&
           s.head_dim <= kMaxDim && s.ffn <= kMaxDim && s.vocab <= kMaxDim && s.max_seq <= kMaxDim &&
           s.n_heads * s.head_dim <= kMaxDim,
       "every size must be at most 2^24");
  need(s.n_heads % s.n_kv_heads == 0, "heads must be a multiple of kv heads");
  // one slot's KV cache: 2 x layers x kv heads x positions x head_dim floats, in 128-bit arithmetic
  // (its pages are touched only as positions fill, but the address range is reserved at once)
  const unsigned __int128 kv = (unsigned __int128)(2 * 4) * uint64_t(s.n_layers) * uint64_t(s.n_kv_heads) *
                               uint64_t(s.max_seq) * uint64_t(s.head_dim);
  need(kv <= kMaxKvBytes, "one slot's KV cache (2 x layers x kv heads x max_seq x head_dim x 4 bytes) would pass "
                          "2^40 bytes: lower max_seq");
  need(s.norm_eps >= 0, "norm eps must be >= 0");
  if (s.pos == PosKind::kRope) {
    need(s.rotary_dim > 0 && s.rotary_dim <= s.head_dim && s.rotary_dim % 2 == 0,
         "rotary_dim must be even and at most head_dim");
    need(int64_t(s.rope_inv_freq.size()) == s.rotary_dim / 2, "rope_inv_freq must hold rotary_dim / 2 values");
    need(s.layer_rope_inv_freq.empty() || int64_t(s.layer_rope_inv_freq.size()) == s.n_layers,
         "layer_rope_inv_freq must hold one list per layer");
    for (const auto& f : s.layer_rope_inv_freq)
      need(int64_t(f.size()) == s.rotary_dim / 2, "each layer's rope frequencies must hold rotary_dim / 2 values");
  }
  need(s.sliding_window >= 0, "sliding_window must be >= 0");
  need(s.layer_window.empty() || int64_t(s.layer_window.size()) == s.n_layers, "layer_window must hold one per layer");
  for (int64_t w : s.layer_window) need(w >= 0, "a layer's window must be >= 0");
  need(s.embed_scale >= 0 && s.attn_scale >= 0 && s.attn_softcap >= 0 && s.final_softcap >= 0,
       "embed_scale, attn_scale and the soft caps must be >= 0 (0: off)");
  need(!s.gelu_gate || s.mlp == MlpKind::kSwiGLU, "gelu_gate needs the gated (swiglu) MLP");
  need(s.rope_attention_factor > 0 && s.rope_attention_factor < 1e6, "rope_attention_factor must be positive");
}

void check_linear_shape(const ModelSpec& spec, int64_t layer, Proj proj, int64_t N, int64_t K) {
  if (layer < 0 || layer >= spec.n_layers)
    throw std::invalid_argument("layer " + std::to_string(layer) + " is out of range [0, " + std::to_string(spec.n_layers) + ")");
  const int64_t H = spec.n_heads, Hkv = spec.n_kv_heads, D = spec.head_dim, C = spec.hidden;
  int64_t wantN = 0, wantK = C;
  switch (proj) {
    case Proj::kQ: wantN = H * D; break;
    case Proj::kK: case Proj::kV: wantN = Hkv * D; break;
    case Proj::kO: wantN = C; wantK = H * D; break;
    case Proj::kGate: case Proj::kUp: wantN = spec.ffn; break;
    case Proj::kDown: wantN = C; wantK = spec.ffn; break;
    default: throw std::invalid_argument("unknown projection");
  }
  if (N != wantN || K != wantK) {
    throw std::invalid_argument("layer " + std::to_string(layer) + " " + proj_name(proj) + " weight has shape (" +
                                std::to_string(N) + ", " + std::to_string(K) + "), the config implies (" +
                                std::to_string(wantN) + ", " + std::to_string(wantK) + ")");
  }
}

Proj proj_from_name(const std::string& name) {
  std::string known;
  for (int p = 0; p < int(Proj::kCount); ++p) {
    if (name == proj_name(Proj(p))) return Proj(p);
    known += std::string(p ? ", " : "") + proj_name(Proj(p));
  }
  throw std::invalid_argument("unknown projection '" + name + "' (" + known + ")");
}

bool has_norm(const ModelSpec& spec, int which) {
  return which == 0 || which == 1 || ((which == 2 || which == 3) && spec.qk_norm) ||
         ((which == 4 || which == 5) && spec.post_norms);
}

void check_norm_index(const ModelSpec& spec, int64_t layer, int which) {
  if (layer == -1 ? which != 0 : (layer < 0 || layer >= spec.n_layers || !has_norm(spec, which))) {
    const char* why = which == 2 || which == 3 ? ": the spec has no q/k norms"
                      : which == 4 || which == 5 ? ": the spec has no post norms" : "";
    throw std::invalid_argument("norm index (layer " + std::to_string(layer) + ", which " + std::to_string(which) +
                                ") out of range" + (layer >= 0 && layer < spec.n_layers ? why : ""));
  }
}

int64_t norm_size(const ModelSpec& spec, int64_t layer, int which) {
  check_norm_index(spec, layer, which);
  return layer >= 0 && (which == 2 || which == 3) ? spec.head_dim : spec.hidden;
}

std::string position_embedding_error(const ModelSpec& spec, int64_t n_positions) {
  if (n_positions >= spec.max_seq) return "";
  return "the position embedding has " + std::to_string(n_positions) + " rows, fewer than the context (" +
         std::to_string(spec.max_seq) + ")";
}

std::vector<std::string> missing_weights(const ModelSpec& spec, const WeightsHeld& held) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < spec.n_layers; ++i) {
    for (int p = 0; p < int(Proj::kCount); ++p) {
      if (spec.mlp == MlpKind::kGelu && Proj(p) == Proj::kGate) continue;
      if (!held.linear(i, Proj(p))) out.push_back("layer " + std::to_string(i) + " " + proj_name(Proj(p)));
    }
    static const char* norms[] = {" attention norm", " mlp norm", " q norm", " k norm", " post-attention norm",
                                  " post-mlp norm"};
    for (int w = 0; w < 6; ++w)
      if (has_norm(spec, w) && !held.norm(i, w)) out.push_back("layer " + std::to_string(i) + norms[w]);
  }
  if (!held.norm(-1, 0)) out.push_back("final norm");
  if (!held.embedding()) out.push_back("embedding");
  if (!held.lm_head()) out.push_back("lm head");
  if (spec.pos == PosKind::kLearned && !held.position_embedding()) out.push_back("position embedding");
  return out;
}

}  // namespace fastlm
