// The decoder on the GPU: the CPU executor's interface (runtime/model.h), on the same spec and checks (model/) with weights, KV cache
// and activations in device memory, each step a sequence of the kernels in kernels.h. Host code
// (no CUDA types): compiled for fastlm::cuda, and for fastlm::cuda_emu under the SIMT emulation,
// where tests check its tokens against the CPU executor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "model/slots.h"
#include "model/spec.h"

namespace fastlm {
namespace FASTLM_GPU_NS {

// device memory, owned
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) : p_(bytes ? device_alloc(bytes) : nullptr), bytes_(bytes) {}
  ~Buffer() { if (p_) device_free(p_); }
  Buffer(Buffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      if (p_) device_free(p_);
      p_ = o.p_, bytes_ = o.bytes_;
      o.p_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  void* get() const { return p_; }
  float* f() const { return static_cast<float*>(p_); }
  size_t bytes() const { return bytes_; }
  static Buffer upload(const void* src, size_t bytes) {
    Buffer b(bytes);
    if (bytes) copy_to_device(b.get(), src, bytes);
    return b;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class DeviceModel {
 public:
  explicit DeviceModel(ModelSpec spec);  // validates the spec (std::invalid_argument)
  const ModelSpec& spec() const { return spec_; }

  // weights (fp32 or bf16, DType as on the CPU) copied to the device
  void set_linear(int64_t layer, Proj proj, const void* w, DType wt, int64_t N, int64_t K, const float* bias);
  void set_norm(int64_t layer, int which, const float* w, const float* b);  // layer -1: final
  void set_embedding(const void* w, DType wt);
  void set_position_embedding(const float* w, int64_t n_positions);
  void set_lm_head(const void* w, DType wt);
  void tie_lm_head();
  std::vector<std::string> missing() const;
  size_t weight_bytes() const;

  int64_t n_slots() const { return slots_.size(); }
  void ensure_slots(int64_t n);
  int64_t slot_len(int64_t slot) const;
  void truncate_slot(int64_t slot, int64_t len);
  void copy_slot(int64_t src, int64_t dst, int64_t len);
  size_t kv_bytes_per_slot() const;
  DType kv_type() const;  // the KV cache's elements: bf16 for a bf16 model, else fp32

  void prefill(int64_t slot, const int32_t* tokens, int64_t T, float* logits, bool all_logits);
  void decode(const int64_t* slots, const int32_t* tokens, int64_t B, float* logits);

  // decode steps as CUDA graphs (captured at a batch size's first step, replayed after): on unless
  // FASTLM_CUDA_GRAPHS=0 or set_graphs(false)
  bool graphs() const { return use_graphs_; }
  void set_graphs(bool on) {
    use_graphs_ = on;
    if (!on) graphs_.clear();
  }
  int64_t graph_replays() const { return graph_replays_; }
  int64_t flash_prefills() const { return flash_prefills_; }  // prefill steps that took FlashAttention

 private:
  struct Linear {
    Buffer w, bias;
    DType wt = DType::kF32;
    int64_t N = 0, K = 0;
    bool set = false;
  };
  struct Layer {
    Linear proj[int(Proj::kCount)];
    Buffer norm_w[2], norm_b[2];
    Linear qkv, gate_up;  // fused at the first step: one launch instead of three / two
  };
  struct Slot {
    Buffer kv;  // (n_layers, max_seq, 2, Hkv, D) of kv_type(): a position's k and v rows side by side, as q|k|v has them
    int64_t len = 0;
  };

  // T rows, row i of sequence row_slots[i] (a sequence's rows together, in order); logits of rows
  // out_row0 .. out_row0 + n_out - 1. decode: one row per sequence, all logits (a graph replays it)
  void step(const int32_t* tokens, int64_t T, const std::vector<int64_t>& row_slots, int64_t out_row0,
            int64_t n_out, float* logits, bool decode);
  // the kernels of a step; prefill_seq: the one sequence of a prefill step (null when decoding)
  void forward(int64_t T, int64_t max_keys, int64_t out_row0, int64_t n_out, const Slot* prefill_seq);
  Graph capture(int64_t T, int64_t max_keys);
  void prepare();  // at the first step: every weight there, q|k|v and gate|up fused
  void linear(const Linear& l, const float* x, int64_t M, float* y);
  void norm(const Buffer& w, const Buffer& b, const float* x, float* y, int64_t rows);
  void ensure_buffers(int64_t rows);
  void fuse(Linear& out, std::initializer_list<const Linear*> parts);
  void check_linear_shape(int64_t layer, Proj proj, int64_t N, int64_t K) const;
  Linear upload_linear(const void* w, DType wt, int64_t N, int64_t K, const float* bias) const;

  ModelSpec spec_;
  std::vector<Layer> layers_;
  Linear head_;
  Buffer final_w_, final_b_, embedding_, pos_embedding_, inv_freq_;
  DType embedding_type_ = DType::kF32;
  bool has_embedding_ = false, tied_ = false, complete_ = false;
  SlotList<Slot> slots_;
  int64_t buf_rows_ = 0;
  // args_: a step's tokens and positions (int32), then its rows' cache pointers
  Buffer x_, h_, qkv_, attn_, tmp_, gu_, act_, xb_, ws_, args_, logits_;
  DType kv_dt_ = DType::kF32;
  bool use_graphs_ = true;
  int64_t graph_replays_ = 0, flash_prefills_ = 0;
  std::map<std::pair<int64_t, int>, Graph> graphs_;  // decode steps by (rows, attention splits)
};

}  // namespace FASTLM_GPU_NS
}  // namespace fastlm
