"""A tiny llama GGUF written with the `gguf` package (llama.cpp's own Python writer): weights from
a tiny random transformers model, Q/K permuted the way llama.cpp's converter does, a mix of
F32 / F16 / Q8_0 / Q4_0 / Q4_1 tensors (or any GGUF block type), and a byte-level BPE vocabulary
trained on the spot.

The `gguf` package quantizes only Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0; a tensor of another block type
(the K-quants, IQ4) is written as random blocks scaled to the float weight's spread
(random_blocks): the file then defines the model, and transformers reads the same file."""
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


def sentencepiece_vocab(vocab_size: int = 400) -> tuple[list[str], list[float], list[int]]:
    """A Llama-2-style SentencePiece vocabulary (tokens, scores, token types): <unk>, <s>, </s>,
    the 256 byte tokens <0x00>..<0xFF>, then pieces (with the "▁" word marker) learned on TEXT,
    best first, scored by rank."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"]))
    pieces = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t not in ("<unk>", "<s>", "</s>")]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    return tokens, scores, types


# the fp16 fields of each block type (byte offsets in a block): scales, minimums
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82], "Q3_K": [108],
              "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_NL": [0], "IQ4_XS": [0]}
QUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


def random_blocks(type_name: str, shape: tuple[int, int], rng: np.random.Generator, std: float = 1.0) -> np.ndarray:
    """(N, row bytes) uint8 of random blocks of a GGUF type whose dequantized values have about
    the given standard deviation (every fp16 field is set, then all are scaled together: the values
    are linear in them)."""
    import gguf

    qt = getattr(gguf.GGMLQuantizationType, type_name)
    qk, bb = gguf.GGML_QUANT_SIZES[qt]
    N, K = shape
    raw = rng.integers(0, 256, size=(N, K // qk, bb), dtype=np.uint8)
    fields = F16_FIELDS[type_name]
    vals = rng.uniform(0.5, 1.5, size=(N, K // qk, len(fields)))
    vals[..., 0] *= rng.choice([-1.0, 1.0], size=vals.shape[:2])  # a negative scale now and then
    for scale in (1.0, None):
        if scale is None:
            got = gguf.quants.dequantize(raw.reshape(N, -1), qt)
            scale = std / max(float(got.std()), 1e-30)
        for i, off in enumerate(fields):
            raw[:, :, off:off + 2] = (vals[..., i] * scale).astype("<f2").view(np.uint8).reshape(N, K // qk, 2)
    return raw.reshape(N, -1)


def patch_tensor_info(path: Path, name: str, first_dim: int | None = None, ggml_type: int | None = None) -> bytes:
    """The file's bytes with one tensor's header entry changed: its first (row) dimension or its
    type id (entry: name, n_dims u32, dims u64 each, type u32, offset u64)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(name.encode()) + len(name)
    n_dims = int.from_bytes(raw[at:at + 4], "little")
    if first_dim is not None:
        raw[at + 4:at + 12] = first_dim.to_bytes(8, "little")
    if ggml_type is not None:
        raw[at + 4 + 8 * n_dims:at + 8 + 8 * n_dims] = ggml_type.to_bytes(4, "little")
    return bytes(raw)


def build(path: Path, types: dict[str, str] | None = None, hidden: int = 64, ffn: int = 96, heads: int = 4,
          kv_heads: int = 2, layers: int = 2, tied: bool = True, pre: str = "default",
          extra_tensors: dict[str, np.ndarray] | None = None, extra_metadata: dict | None = None,
          weights: dict[str, np.ndarray] | None = None, rope_theta: float = 10000.0,
          sentencepiece: bool = False, user_defined: tuple[str, ...] = (), arch: str = "llama",
          head_dim: int | None = None, context: int = 256, window: int = 48,
          softcaps: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Writes path/model.gguf; returns the file. types maps a tensor kind (attn_q, ffn_down,
    token_embd, output, ...) to a ggml type name; the rest are F32. tied=False writes an output
    tensor (the head) of its own; pre names tokenizer.ggml.pre; weights replaces the random
    transformers model's state dict (Hugging Face names); extra_tensors / extra_metadata are written
    as they are (values of extra_metadata: str, bool, int or float); sentencepiece=True writes a
    SentencePiece vocabulary (tokenizer.ggml.model "llama") instead of byte-level BPE;
    user_defined tokens are appended to the vocabulary as type 4 (added tokens like <think>); arch
    "qwen2" (q/k/v biases), "qwen3" (q/k head norms, head_dim), "gemma2" / "gemma3" (post norms,
    norms stored as 1 + w, a sliding window, softcaps = (attention, final) logit caps) writes that
    family in llama.cpp's layout for it (Q and K not permuted, keys under the architecture's name);
    "phi3" writes q|k|v and gate|up fused, half of each head rotating, a sliding window.
    The transformers model the file holds is saved in path/hf too (without weights=)."""
    import gguf

    types = types or {"attn_q": "Q8_0", "attn_k": "Q4_1", "attn_v": "Q4_0", "ffn_down": "Q4_1", "ffn_up": "F16",
                      "token_embd": "Q8_0"}
    tok = train_bpe()
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    if sentencepiece:
        tokens, sp_scores, sp_types = sentencepiece_vocab()
        sp_scores += [0.0] * len(user_defined)
        sp_types += [4] * len(user_defined)
    tokens = tokens + list(user_defined)
    merges = [" ".join(m) for m in tok.model.get_merges()] if hasattr(tok.model, "get_merges") else None
    if merges is None:
        import json
        merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    torch.manual_seed(11)
    D = head_dim or hidden // heads
    config_class, model_class = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                                 "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
                                 "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
                                 "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
                                 "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM)}[arch]
    gemma = arch in ("gemma2", "gemma3")
    extra_cfg = {}
    if gemma:  # as llama.cpp runs them: scores by 1 / sqrt(head_dim), sliding layers in its fixed pattern
        extra_cfg = dict(query_pre_attn_scalar=D, sliding_window=window, attn_logit_softcapping=softcaps[0] or None,
                         final_logit_softcapping=softcaps[1] or None)
        if arch == "gemma3":
            extra_cfg["rope_parameters"] = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                            "full_attention": {"rope_type": "default", "rope_theta": rope_theta}}
            extra_cfg["sliding_window_pattern"] = 6
        else:
            extra_cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": rope_theta}
    elif arch == "phi3":  # half of each head rotates; a window shorter than the tests' sequences
        extra_cfg = dict(rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "partial_rotary_factor": 0.5},
                         sliding_window=window, pad_token_id=0)
    else:
        extra_cfg["rope_theta"] = rope_theta
    cfg = config_class(vocab_size=len(tokens), hidden_size=hidden, intermediate_size=ffn,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=context, rms_norm_eps=1e-5, tie_word_embeddings=tied, head_dim=D,
                       **extra_cfg)
    if weights is None:
        model = model_class(cfg).eval()
        with torch.no_grad():  # Qwen's norms and biases away from 1 and 0, so a lost one shows
            for name, prm in (model.named_parameters() if arch != "llama" else ()):
                if "norm" in name:
                    prm.uniform_(-0.5, 0.5) if gemma else prm.uniform_(0.5, 1.5)
                elif name.endswith(".bias"):
                    prm.normal_(0.0, 0.5)
        sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
        model.save_pretrained(str(path / "hf"), safe_serialization=True)
    else:
        sd = weights

    path.mkdir(parents=True, exist_ok=True)
    out = path / "model.gguf"
    w = gguf.GGUFWriter(str(out), arch)
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(rope_theta)
    if gemma:
        w.add_sliding_window(window)
        if softcaps[0]:
            w.add_float32(f"{arch}.attn_logit_softcapping", softcaps[0])
        if softcaps[1]:
            w.add_float32(f"{arch}.final_logit_softcapping", softcaps[1])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(D // 2 if arch == "phi3" else D)
    if arch == "phi3":
        w.add_sliding_window(window)
    if head_dim:
        w.add_key_length(D)
        w.add_value_length(D)
    w.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    if not sentencepiece:
        w.add_tokenizer_pre(pre)
    for key, value in (extra_metadata or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    w.add_token_list(tokens)
    if sentencepiece:
        w.add_token_scores(sp_scores)
        w.add_token_types(sp_types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
    else:
        w.add_token_types([3 if t in ("<|endoftext|>", "<s>", "</s>") else 4 if t in user_defined else 1 for t in tokens])
        w.add_token_merges(merges)
        w.add_bos_token_id(vocab["<s>"])
        w.add_eos_token_id(vocab["</s>"])
        w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                        "{% if add_generation_prompt %}<s>assistant: {% endif %}")

    rng = np.random.default_rng(5)

    def put(name: str, a: np.ndarray, kind: str):
        type_name = types.get(kind, "F32")
        qt = getattr(gguf.GGMLQuantizationType, type_name)
        if qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, a.astype(np.float32))
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            q = (gguf.quants.quantize(a.astype(np.float32), qt) if type_name in QUANTIZABLE
                 else random_blocks(type_name, a.shape, rng, float(a.std())))
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qt)

    shift = np.float32(1) if gemma else np.float32(0)  # llama.cpp's Gemma converter stores norms as 1 + w
    put("token_embd.weight", sd["model.embed_tokens.weight"], "token_embd")
    put("output_norm.weight", sd["model.norm.weight"] + shift, "norm")
    for name, a in (extra_tensors or {}).items():
        w.add_tensor(name, a)
    if not tied:
        put("output.weight", sd["lm_head.weight"], "output")
    for i in range(layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"] + shift, "norm")
        if gemma:
            put(f"blk.{i}.ffn_norm.weight", sd[p + "pre_feedforward_layernorm.weight"] + shift, "norm")
            put(f"blk.{i}.post_attention_norm.weight", sd[p + "post_attention_layernorm.weight"] + shift, "norm")
            put(f"blk.{i}.post_ffw_norm.weight", sd[p + "post_feedforward_layernorm.weight"] + shift, "norm")
        else:
            put(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"], "norm")
        if arch == "phi3":  # fused as in the checkpoint: q|k|v, and ffn_up holding gate then up
            put(f"blk.{i}.attn_qkv.weight", sd[p + "self_attn.qkv_proj.weight"], "attn_q")
            put(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"], "attn_output")
            put(f"blk.{i}.ffn_up.weight", sd[p + "mlp.gate_up_proj.weight"], "ffn_up")
            put(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"], "ffn_down")
            continue
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":  # llama.cpp permutes llama's Q and K only
            q, k = permute(q, heads), permute(k, kv_heads)
        put(f"blk.{i}.attn_q.weight", q, "attn_q")
        put(f"blk.{i}.attn_k.weight", k, "attn_k")
        if arch == "qwen2":
            for x in "qkv":
                put(f"blk.{i}.attn_{x}.bias", sd[p + f"self_attn.{x}_proj.bias"], "bias")
        if arch in ("qwen3", "gemma3"):
            put(f"blk.{i}.attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"] + shift, "norm")
            put(f"blk.{i}.attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"] + shift, "norm")
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
