"""GGUF metadata read faithfully: the pre-tokenizer each `tokenizer.ggml.pre` names (ids equal to
transformers' GGUF loading), the end-of-generation tokens, rope_freqs.weight (Llama 3.1 / 3.2 rope
scaling as llama.cpp stores it), and keys or tensors the import does not understand refused by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import assert_close
from fastlm import Engine
from fastlm.formats.gguf import PRE_TOKENIZERS, GGUFError
from tiny_gguf import build, permute, train_bpe

gguf = pytest.importorskip("gguf")

CORPUS = ["def main():\n    return 42  # code", "In 2024, 12345 people paid $3.50 each.", "DON'T I'm we'll they've",
          "print(hello)", "emoji 🚀🎉 and ✨", "日本語のテキスト", "русский текст и Ελληνικά", "  two  spaces\t\ttabs\n\n\nlines",
          "CamelCaseWords and snake_case_words", "x=1;y=2\r\nz=3"]


@pytest.mark.parametrize("pre", ["default", "smollm", "gpt-2", "llama-bpe", "qwen2", "gpt-4o", "tekken"])
def test_pre_tokenizer_ids_equal_transformers(tmp_path, pre):
    path = build(tmp_path, pre=pre)
    eng = Engine.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in CORPUS:
        assert eng.tokenize(text) == tok(text)["input_ids"], (pre, text)


def test_pre_tokenizer_changes_the_split(tmp_path):
    default = Engine.from_pretrained(build(tmp_path / "a", pre="default"))
    llama3 = Engine.from_pretrained(build(tmp_path / "b", pre="llama-bpe"))
    assert any(default.tokenize(t) != llama3.tokenize(t) for t in CORPUS)
    assert set(PRE_TOKENIZERS) >= {"default", "gpt-2", "smollm", "llama-bpe", "qwen2"}


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    with pytest.raises(GGUFError, match="tokenizer.ggml.pre = 'mystery-bpe' is not a pre-tokenizer fastlm knows"):
        Engine.from_pretrained(build(tmp_path, pre="mystery-bpe"))


def test_end_of_generation_tokens(tmp_path):
    vocab = train_bpe().get_vocab()
    path = build(tmp_path, extra_metadata={"tokenizer.ggml.eot_token_id": vocab["<s>"]})
    eng = Engine.from_pretrained(path)
    # eos (</s>), eot (<s> here) and the control token <|endoftext|>
    assert sorted(eng.eos_token_ids) == sorted([vocab["</s>"], vocab["<s>"], vocab["<|endoftext|>"]])
    out = eng.generate([5, 6, 7], max_tokens=40, logit_bias={vocab["<|endoftext|>"]: 100.0})
    assert out.finish_reason == "stop" and out.token_ids == [vocab["<|endoftext|>"]]


def test_rope_freqs_weight_applies_llama3_scaling(tmp_path):
    """A Llama 3.1-style model: transformers computes rope_scaling "llama3" from its config; the
    GGUF holds the same scaling as rope_freqs.weight (convert_hf_to_gguf.py's factors) and no
    scaling keys. fastlm on the GGUF equals transformers on the original model."""
    V = train_bpe().get_vocab_size()
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    sd = {k: v.float().numpy() for k, v in hf.state_dict().items()}
    D = 16
    base = 1.0 / (10000.0 ** (np.arange(0, D, 2, dtype=np.float32) / D))
    scaled = hf.model.rotary_emb.inv_freq.numpy()
    factors = (base / scaled).astype(np.float32)
    assert (factors > 1).any()  # the scaling moves some frequencies
    f32 = {"token_embd": "F32"}  # every tensor in float32: the comparison is with the float model
    path = build(tmp_path, f32, weights=sd, extra_tensors={"rope_freqs.weight": factors})
    ids = list(range(3, 80))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    eng = Engine.from_pretrained(path, dtype="float32")
    assert_close(eng.logits(ids), ref, 1e-4, "rope_freqs logits")
    plain = Engine.from_pretrained(build(tmp_path / "plain", f32, weights=sd), dtype="float32")
    assert np.abs(plain.logits(ids) - ref).max() > 1e-3  # without the factors it would be wrong


def test_rope_freqs_of_the_wrong_size_is_refused(tmp_path):
    with pytest.raises(GGUFError, match="rope_freqs.weight must hold 8 positive factors"):
        Engine.from_pretrained(build(tmp_path, extra_tensors={"rope_freqs.weight": np.ones(5, np.float32)}))


@pytest.mark.parametrize("key,value,match", [
    ("llama.attn_logit_softcapping", 30.0, "metadata key 'llama.attn_logit_softcapping' is not understood"),
    ("llama.expert_count", 8, "mixture-of-experts models are not supported"),
    ("llama.rope.scaling.type", "yarn", "rope scaling 'yarn' is not supported"),
])
def test_metadata_that_changes_the_math_is_refused(tmp_path, key, value, match):
    with pytest.raises(GGUFError, match=match):
        Engine.from_pretrained(build(tmp_path, extra_metadata={key: value}))


def test_unknown_tensor_is_refused(tmp_path):
    path = build(tmp_path, extra_tensors={"blk.0.attn_q_norm.weight": np.ones(16, np.float32)})
    with pytest.raises(GGUFError, match="tensor 'blk.0.attn_q_norm.weight' is not part of a llama model"):
        Engine.from_pretrained(path)


def test_sentencepiece_vocabulary_ids_equal_transformers(tmp_path):
    path = build(tmp_path, sentencepiece=True)
    eng = Engine.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in CORPUS + ["The quick brown fox", " leading space", "Ünïcödé 🚀 bytes"]:
        ids = eng.tokenize(text)
        assert ids == tok(text)["input_ids"], text
        assert ids[0] == 1  # BOS, as llama.cpp and transformers add it
        assert eng.detokenize(ids) == tok.decode(ids, skip_special_tokens=True), text
    assert any(t.startswith("<0x") for t in tok.convert_ids_to_tokens(eng.tokenize("中国 ☃")))  # byte fall-back (not in the vocabulary)


@pytest.mark.parametrize("sentencepiece", [False, True], ids=["byte-level", "sentencepiece"])
def test_user_defined_tokens_stay_whole(tmp_path, sentencepiece):
    path = build(tmp_path, sentencepiece=sentencepiece, user_defined=("<think>", "</think>"))
    eng = Engine.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    think = tok.convert_tokens_to_ids("<think>")
    for text in ["<think>why</think> because", "a<think>b", "no tags here"]:
        assert eng.tokenize(text) == tok(text)["input_ids"], text
    assert think in eng.tokenize("<think>why</think>")
