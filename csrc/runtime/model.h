// the model executor: a decoder described by a small spec, its weights packed once at load, a KV
// cache per sequence slot and preallocated activation buffers. one call runs a whole forward step
// for a chunk of one sequence (prefill) or one token of each of several sequences (decode); the
// caller (Python, GIL released) touches each token, never each layer.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "model/slots.h"
#include "model/spec.h"

namespace fastlm {

class Model {
 public:
  explicit Model(ModelSpec spec);  // validates the spec (std::invalid_argument)
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const char* isa() const { return table_->name; }

  // weights: copied (and linear ones packed) into the model's own memory
  void set_linear(int64_t layer, Proj proj, const void* w, DType wt, int64_t N, int64_t K,
                  const float* bias);
  void set_norm(int64_t layer, int which, const float* w, const float* b);  // layer -1: final
  void set_embedding(const void* w, DType wt);                          // (vocab, hidden)
  void set_position_embedding(const float* w, int64_t n_positions);          // (n, hidden)
  void set_lm_head(const void* w, DType wt);                            // (vocab, hidden)
  void set_lm_head_rows(const void* w, DType wt, int64_t r0, int64_t n);  // rows r0 .. r0 + n of it, in order
  void tie_lm_head();  // the head is the embedding: packed once, rows looked up from the panels
  void tie_embedding();  // the same from the other side: the float head set, no embedding copy made first
  // quantized weights (see QWeight): `data` holds N records of q_row_bytes(type, K, G). borrowed
  // (the caller keeps the memory alive and unchanged for the model's life: a memory-mapped
  // checkpoint) or copied. a quantized embedding serves lookups by dequantizing one row.
  void set_linear_q(int64_t layer, Proj proj, const uint8_t* data, QType type, int64_t N, int64_t K, int64_t G,
                    const float* bias, bool borrow);
  void set_embedding_q(const uint8_t* data, QType type, int64_t G, bool borrow);
  void set_lm_head_q(const uint8_t* data, QType type, int64_t G, bool borrow);
  std::vector<std::string> missing() const;  // weights never set
  size_t weight_bytes() const;

  // sequence slots, each with its own KV cache of spec.max_seq positions
  int64_t n_slots() const { return slots_.size(); }
  void ensure_slots(int64_t n);
  int64_t slot_len(int64_t slot) const;
  void truncate_slot(int64_t slot, int64_t len);  // keep the first len positions (prompt reuse)
  // dst holds the first len positions of src afterwards (n samples of one prompt share its prefill)
  void copy_slot(int64_t src, int64_t dst, int64_t len);
  size_t kv_bytes_per_slot() const;

  // tokens[0:T] of one sequence at positions len .. len + T - 1; logits of every position
  // (all_logits, (T, vocab)) or of the last only ((1, vocab)). T may exceed the step buffers:
  // it runs in chunks.
  void prefill(int64_t slot, const int32_t* tokens, int64_t T, float* logits, bool all_logits);
  // one token for each of B sequences (distinct slots); logits (B, vocab)
  void decode(const int64_t* slots, const int32_t* tokens, int64_t B, float* logits);

  // time spent per kind of op since the last reset, when profiling is on (fastlm bench --profile)
  void set_profiling(bool on) { profiling_ = on; }
  std::vector<std::pair<std::string, double>> profile() const;
  void reset_profile();

 private:
  struct Linear;
  struct Layer;
  struct Slot;
  struct Group {  // rows [row0, row0 + n) of a step belong to `slot`, at positions len .. len + n - 1
    int64_t slot, row0, n;
  };

  class Stopwatch;

  // a forward step, and its stages in order
  void step(const int32_t* tokens, int64_t T, const std::vector<Group>& groups, const int64_t* out_rows,
            int64_t n_out, float* logits);
  void check_tokens(const int32_t* tokens, int64_t T) const;
  void prepare();
  void embed(const int32_t* tokens, int64_t T, const std::vector<Group>& groups, Stopwatch& sw);
  void attention_block(int64_t layer, int64_t T, const std::vector<Group>& groups, Stopwatch& sw);
  void mlp_block(int64_t layer, int64_t T, Stopwatch& sw);
  void add_residual(const Layer& L, int which, int64_t T, Stopwatch& sw);
  void head(const int64_t* out_rows, int64_t n_out, float* logits, Stopwatch& sw);
  void linear(const Linear& l, const float* x, int64_t M, float* y) const;
  void check_linear_shape(int64_t layer, Proj proj, int64_t N, int64_t K) const;
  void embed_row(int32_t token, float* out) const;
  void norm(const std::vector<float>& w, const std::vector<float>& b, const float* x, float* y, int64_t rows) const;
  void ensure_buffers(int64_t rows);
  void fuse_projections();

  ModelSpec spec_;
  const KernelTable* table_;
  std::vector<Layer> layers_;
  std::unique_ptr<Linear> head_;
  int64_t head_rows_ = 0;  // rows of a float head packed so far (set_lm_head_rows)
  std::vector<float> final_norm_w_, final_norm_b_;
  std::vector<uint8_t> embedding_;  // (vocab, hidden) f32 or bf16 when not tied
  std::unique_ptr<Linear> qembedding_;  // a quantized embedding, when set that way
  DType embedding_type_ = DType::kF32;
  bool tied_ = false, has_embedding_ = false;
  bool complete_ = false;  // every weight set (checked once, at the first step)
  std::vector<float> position_embedding_;
  SlotList<Slot> slots_;
  // activation buffers, (rows, width) each
  int64_t buf_rows_ = 0;
  std::vector<float> x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_, sel_, qkv_, gu_;
  std::vector<int64_t> pos_;
  bool profiling_ = false;
  double prof_[8] = {};  // seconds per Op
};

}  // namespace fastlm
