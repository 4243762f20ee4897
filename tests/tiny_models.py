"""Tiny random Hugging Face models, built with transformers and saved as safetensors: the
reference implementations the runtime is held to."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers


def save(model, path: Path, **kw) -> Path:
    model.save_pretrained(str(path), safe_serialization=True, **kw)
    return path


def build(kind: str, path: Path) -> Path:
    torch.manual_seed({"llama": 1, "gpt2": 2, "qwen2": 3, "mistral": 4, "llama3": 5, "sharded": 6, "bf16": 7,
                       "odd": 8, "bf16_d64": 9, "qwen3": 10, "phi3": 11, "mistral_window": 12,
                       "phi3_window": 13, "gemma2": 14, "gemma3": 15}[kind])
    common = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2,
              "num_attention_heads": 4, "max_position_embeddings": 640, "bos_token_id": 1, "eos_token_id": 2}
    if kind == "llama":
        cfg = transformers.LlamaConfig(num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False, **common)
        return save(transformers.LlamaForCausalLM(cfg).eval(), path)
    if kind == "llama3":  # Llama 3 rope scaling, no GQA, tied
        cfg = transformers.LlamaConfig(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500000.0,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                       **common)
        return save(transformers.LlamaForCausalLM(cfg).eval(), path)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(num_key_value_heads=1, tie_word_embeddings=True, **common)
        return save(transformers.Qwen2ForCausalLM(cfg).eval(), path)
    if kind == "qwen3":  # q/k head norms; head_dim 24 is not hidden / heads; three layers, untied
        cfg = transformers.Qwen3Config(vocab_size=320, hidden_size=64, intermediate_size=112, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                       max_position_embeddings=640, rms_norm_eps=1e-6, rope_theta=1000000.0,
                                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
        model = transformers.Qwen3ForCausalLM(cfg).eval()
        with torch.no_grad():  # norms away from 1, so a missing or misplaced one shows
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
        return save(model, path)
    if kind == "phi3":  # q|k|v and gate|up fused in the checkpoint; half of each head rotates
        cfg = transformers.Phi3Config(vocab_size=320, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=640,
                                      partial_rotary_factor=0.5, tie_word_embeddings=False, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0, sliding_window=None)
        return save(transformers.Phi3ForCausalLM(cfg).eval(), path)
    if kind in ("gemma2", "gemma3"):  # windows of 48 within 300-token tests; caps low enough to bend the values
        shape = dict(vocab_size=320, hidden_size=64, intermediate_size=112, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, max_position_embeddings=640, query_pre_attn_scalar=24,
                     sliding_window=48, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        if kind == "gemma2":
            cfg = transformers.Gemma2Config(num_hidden_layers=3, attn_logit_softcapping=0.2,
                                            final_logit_softcapping=3.0, **shape)
            model = transformers.Gemma2ForCausalLM(cfg).eval()
        else:  # layers 0, 1 sliding (local rope), 2 global (its own base, linear scaling), 3 sliding
            cfg = transformers.Gemma3TextConfig(num_hidden_layers=4, sliding_window_pattern=3, rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 4.0}}, **shape)
            model = transformers.Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():  # Gemma's norms scale by 1 + w, w = 0 at init: away from 0, so 1 + w shows
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(-0.5, 0.5)
        return save(model, path)
    if kind == "mistral_window":  # a sliding window shorter than the tests' sequences
        cfg = transformers.MistralConfig(num_key_value_heads=2, sliding_window=64, tie_word_embeddings=False, **common)
        return save(transformers.MistralForCausalLM(cfg).eval(), path)
    if kind == "phi3_window":
        cfg = transformers.Phi3Config(vocab_size=320, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=640,
                                      partial_rotary_factor=0.5, tie_word_embeddings=False, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0, sliding_window=48)
        return save(transformers.Phi3ForCausalLM(cfg).eval(), path)
    if kind == "mistral":
        cfg = transformers.MistralConfig(num_key_value_heads=2, sliding_window=None, tie_word_embeddings=False, **common)
        return save(transformers.MistralForCausalLM(cfg).eval(), path)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=1, eos_token_id=2)
        return save(transformers.GPT2LMHeadModel(cfg).eval(), path)
    if kind == "odd":  # widths that are not whole GEMM panels: q/k/v and gate/up stay separate weights
        cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=60, intermediate_size=100, num_hidden_layers=2,
                                       num_attention_heads=6, num_key_value_heads=2, head_dim=10,
                                       max_position_embeddings=640, tie_word_embeddings=False)
        return save(transformers.LlamaForCausalLM(cfg).eval(), path)
    if kind == "sharded":
        cfg = transformers.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, **common)
        return save(transformers.LlamaForCausalLM(cfg).eval(), path, max_shard_size="60KB")
    if kind == "bf16":
        cfg = transformers.LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, **common)
        return save(transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval(), path)
    if kind == "bf16_d64":  # heads of 64: the device decoder's FlashAttention prefill takes them
        cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=128, intermediate_size=160, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                                       max_position_embeddings=640, bos_token_id=1, eos_token_id=2,
                                       tie_word_embeddings=False)
        return save(transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval(), path)
    raise ValueError(kind)
