// a decoder described by a small spec (its sizes, norm, positions, MLP), its projections by name,
// and the checks both executors share: the CPU one (runtime/) and the CUDA one (cuda/).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastlm {

enum class NormKind { kRms = 0, kLayer = 1 };
enum class MlpKind { kSwiGLU = 0, kGelu = 1 };  // gate/up/down, or up(fc)/down(proj)
enum class PosKind { kRope = 0, kLearned = 1 };

struct ModelSpec {
  int64_t n_layers = 0, hidden = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0;
  int64_t max_seq = 0;  // KV cache capacity per sequence (positions)
  NormKind norm = NormKind::kRms;
  float norm_eps = 1e-5f;
  MlpKind mlp = MlpKind::kSwiGLU;
  PosKind pos = PosKind::kRope;
  std::vector<float> rope_inv_freq;  // rotary_dim / 2 frequencies
  int64_t rotary_dim = 0;
  bool rope_interleaved = false;
  bool qk_norm = false;  // an RMSNorm over each head of q and of k, before rope (Qwen3): norms 2 and 3
  int64_t sliding_window = 0;  // > 0: position p attends to keys p - W + 1 .. p only (Mistral, Phi-3)
  // Gemma's: per layer, a window (0: global) and rope frequencies (empty: all layers use rope_inv_freq)
  std::vector<int64_t> layer_window;
  std::vector<std::vector<float>> layer_rope_inv_freq;
  bool post_norms = false;    // an RMSNorm on the attention and MLP outputs before the residual: norms 4, 5
  bool gelu_gate = false;     // SwiGLU's gate through gelu-tanh instead of silu (GeGLU)
  float embed_scale = 0.0f;   // > 0: embeddings times this (Gemma: sqrt(hidden))
  float attn_scale = 0.0f;    // > 0: scores times this instead of 1 / sqrt(head_dim)
  float attn_softcap = 0.0f;  // > 0: scores become cap * tanh(scores / cap) before the softmax
  float final_softcap = 0.0f; // > 0: logits become cap * tanh(logits / cap)
  float rope_attention_factor = 1.0f;  // LongRoPE: cos and sin times this (the rotated dims of q and k)
};

// the sliding window of layer li (0: none)
inline int64_t window_of(const ModelSpec& s, int64_t li) {
  return s.layer_window.empty() ? s.sliding_window : s.layer_window[size_t(li)];
}

// the linear layers of one decoder layer, by name
enum class Proj { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kCount };

// checks both executors (Model in runtime/, the CUDA DeviceModel in cuda/) share; each throws
// std::invalid_argument naming what is wrong
const char* proj_name(Proj p);
Proj proj_from_name(const std::string& name);  // "q" ... "down"
void validate_spec(const ModelSpec& s);
void check_linear_shape(const ModelSpec& spec, int64_t layer, Proj proj, int64_t N, int64_t K);
// a layer's norms: 0 before attention, 1 before the MLP, 2 and 3 on q and k heads (qk_norm), 4 and
// 5 on the attention and MLP outputs (post_norms); layer -1, which 0: the final norm
bool has_norm(const ModelSpec& spec, int which);  // whether a layer of this spec has norm `which`
void check_norm_index(const ModelSpec& spec, int64_t layer, int which);
int64_t norm_size(const ModelSpec& spec, int64_t layer, int which);  // hidden, or head_dim for q / k
std::string position_embedding_error(const ModelSpec& spec, int64_t n_positions);  // "" when it fits

// what an executor holds, asked weight by weight: the names of those a step would miss
struct WeightsHeld {
  virtual ~WeightsHeld() = default;
  virtual bool linear(int64_t layer, Proj p) const = 0;
  virtual bool norm(int64_t layer, int which) const = 0;  // layer -1: the final norm
  virtual bool embedding() const = 0;
  virtual bool lm_head() const = 0;
  virtual bool position_embedding() const = 0;
};
std::vector<std::string> missing_weights(const ModelSpec& spec, const WeightsHeld& held);

}  // namespace fastlm
