"""A tiny llama GGUF written with the `gguf` package (llama.cpp's own Python writer): weights from
a tiny random transformers model, Q/K permuted the way llama.cpp's converter does, a mix of
F32 / F16 / Q8_0 / Q4_0 / Q4_1 tensors, and a byte-level BPE vocabulary trained on the spot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

TEXT = ("The quick brown fox jumps over the lazy dog. def main(): return 42  # code\n"
        "Ünïcödé text, 日本語のテキスト, Ελληνικά, русский, emoji 🚀🎉 and numbers 12345.\n") * 20


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py: rotate-half pairs -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def train_bpe(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    return tok


def build(path: Path, types: dict[str, str] | None = None) -> Path:
    """Writes path/model.gguf; returns the file. types maps a tensor kind (attn_q, ffn_down, ...)
    to a ggml type name; the rest are F32."""
    import gguf

    types = types or {"attn_q": "Q8_0", "attn_k": "Q4_1", "attn_v": "Q4_0", "ffn_down": "Q4_1", "ffn_up": "F16",
                      "token_embd": "Q8_0"}
    tok = train_bpe()
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) for m in tok.model.get_merges()] if hasattr(tok.model, "get_merges") else None
    if merges is None:
        import json
        merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    torch.manual_seed(11)
    cfg = transformers.LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}

    path.mkdir(parents=True, exist_ok=True)
    out = path / "model.gguf"
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in ("<|endoftext|>", "<s>", "</s>") else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<s>assistant: {% endif %}")

    def put(name: str, a: np.ndarray, kind: str):
        qt = getattr(gguf.GGMLQuantizationType, types.get(kind, "F32"))
        if qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, a.astype(np.float32))
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = gguf.quants.quantize(a.astype(np.float32), qt)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qt)

    put("token_embd.weight", sd["model.embed_tokens.weight"], "token_embd")
    put("output_norm.weight", sd["model.norm.weight"], "norm")
    for i in range(2):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"], "norm")
        put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], "norm")
        put(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], 4), "attn_q")
        put(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], 2), "attn_k")
        put(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"], "attn_v")
        put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"], "attn_output")
        put(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"], "ffn_gate")
        put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"], "ffn_up")
        put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], "ffn_down")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
