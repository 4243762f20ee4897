"""GGUF import against transformers (which loads the same GGUF) and llama.cpp's own gguf-py:
dequantization bit-exact, logits and greedy tokens, tokenizer ids, chat template, convert."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import assert_close
from fastlm import Engine, cli
from fastlm.tools.convert import convert_gguf
from fastlm.formats.gguf import GGUFError, GGUFFile, dequantize
from tiny_gguf import build, patch_tensor_info

gguf = pytest.importorskip("gguf")

TEXTS = ["hello world", "def f(x):\n    return x ** 2  # square", "日本語のテキスト and Ελληνικά, русский",
         "emoji 🚀🎉 mixed with ascii", "  leading spaces\t\ttabs\n\nnew lines", "<s>special</s> tokens<|endoftext|>"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("gguf"))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16", "BF16"])
def test_dequantize_bit_exact_with_gguf_py(qtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((6, 128)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    qt = getattr(gguf.GGMLQuantizationType, qtype)
    raw = gguf.quants.quantize(a, qt)
    ours = dequantize(np.ascontiguousarray(raw).view(np.uint8).reshape(-1), int(qt), a.shape)
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(raw, qt).reshape(a.shape))


def test_logits_and_greedy_match_transformers(tiny):
    eng = Engine.from_pretrained(tiny)
    assert eng.info["gguf_types"] == ["F16", "F32", "Q4_0", "Q4_1", "Q8_0"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tiny.parent), gguf_file=tiny.name,
                                                           dtype=torch.float32).eval()
    ids = list(range(3, 60))
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
        want = hf.generate(torch.tensor([ids[:6]]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                           pad_token_id=0, attention_mask=torch.ones(1, 6, dtype=torch.long))[0, 6:].tolist()
    assert_close(eng.logits(ids), ref, 1e-4, "gguf logits")
    assert eng.generate(ids[:6], max_tokens=24, ignore_eos=True).token_ids == want


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_qwen_families_match_transformers(tmp_path, arch, quant):
    """llama.cpp's qwen2 / qwen3 layout (Q and K not permuted; q/k/v biases, q/k head norms),
    against transformers reading the same file: 300 positions, 48 greedy tokens, a batch."""
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "token_embd")
    # qwen3: head_dim 128, not hidden / heads (as the real Qwen3 has; transformers' GGUF reader
    # takes Qwen3Config's default 128 instead of reading attention.key_length)
    path = build(tmp_path, types={k: quant for k in kinds}, arch=arch, head_dim=128 if arch == "qwen3" else None,
                 tied=arch == "qwen2", layers=3 if arch == "qwen3" else 2, rope_theta=1000000.0, context=512)
    eng = Engine.from_pretrained(path)
    assert eng.info["architecture"] == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[arch]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    ids = (np.random.default_rng(3).integers(3, 380, size=300)).tolist()
    got = against(eng, hf, ids, [ids[:8], ids[100:105], ids[200:230]], quant, arch)
    assert got == [eng.generate(p, max_tokens=48, ignore_eos=True).token_ids for p in [ids[:8], ids[100:105], ids[200:230]]]


def load_dequantized(hf, path, arch):
    """The reference holds the file's weights: each tensor dequantized by the gguf package (Gemma's
    norms, stored as 1 + w, back to w)."""
    import gguf

    from fastlm.formats.gguf import GEMMA, _hf_name

    sd = hf.state_dict()
    with torch.no_grad():
        for t in gguf.GGUFReader(str(path)).tensors:
            name = _hf_name(t.name, arch)
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(sd[name].shape)
            sd[name].copy_(torch.from_numpy(np.array(w - 1 if arch in GEMMA and "norm" in name else w)))


def against(eng, hf, ids, prompts, quant, what):
    """fastlm's logits over ids against transformers' (1e-4 in float32; Q8_0 within its activation
    rounding), and, in float32, the greedy 48 tokens of prompts batched; fastlm's batched tokens."""
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()

        def greedy(p):
            return hf.generate(torch.tensor([p]), max_new_tokens=48, do_sample=False, eos_token_id=None,
                               pad_token_id=0, attention_mask=torch.ones(1, len(p), dtype=torch.long))[0, len(p):].tolist()
    # Q8_0 weights: transformers dequantizes them to float32; fastlm dots them in their own blocks
    # with int16 activations, so its logits differ by that rounding
    assert_close(eng.logits(ids), ref, 1e-4 if quant == "F32" else 2e-2, f"{what} {quant} logits")
    got = [g.token_ids for g in eng.generate(prompts, max_tokens=48, ignore_eos=True)]
    if quant == "F32":
        assert got == [greedy(p) for p in prompts]
    return got


@pytest.mark.parametrize("arch, layers", [("gemma2", 3), ("gemma3", 7)])
@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_gemma_families_match_the_model_they_hold(tmp_path, arch, layers, quant):
    """llama.cpp's gemma2 / gemma3 layout (norms stored as 1 + w, post norms, sliding window 48 in
    llama.cpp's fixed layer pattern, soft caps in the metadata for Gemma 2) against transformers
    running the model the file was written from: 300 positions, 48 greedy tokens, a batch.
    (transformers' own GGUF reader drops the soft caps and the window pattern: not the reference.)"""
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "token_embd")
    path = build(tmp_path, types={k: quant for k in kinds}, arch=arch, head_dim=16, layers=layers,
                 rope_theta=1000000.0, context=512, window=48, softcaps=(0.2, 3.0) if arch == "gemma2" else (0.0, 0.0))
    eng = Engine.from_pretrained(path)
    assert eng.info["architecture"] == {"gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}[arch]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    if quant != "F32":
        load_dequantized(hf, path, arch)
    ids = (np.random.default_rng(4).integers(3, 380, size=300)).tolist()
    against(eng, hf, ids, [ids[:8], ids[200:230]], quant, arch)


@pytest.mark.parametrize("quant", ["F32", "Q8_0"])
def test_phi3_matches_the_model_it_holds(tmp_path, quant):
    """llama.cpp's phi3 layout: attn_qkv and ffn_up (gate | up) fused and cut by rows in their own
    blocks, partial rotary from rope.dimension_count, a sliding window of 48 within 300 positions."""
    kinds = ("attn_q", "attn_output", "ffn_up", "ffn_down", "token_embd")
    path = build(tmp_path, types={k: quant for k in kinds}, arch="phi3", layers=2, context=512, window=48, tied=False)
    eng = Engine.from_pretrained(path)
    assert eng.info["architecture"] == "Phi3ForCausalLM" and eng.info["sliding_window"] == 48
    if quant == "Q8_0":  # the fused tensors stay in their blocks, cut row-wise
        assert {"model.layers.0.self_attn.qkv_proj.weight[k]", "model.layers.1.mlp.gate_up_proj.weight[up]"} <= \
            set(eng.info["quantized"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    if quant != "F32":
        load_dequantized(hf, path, "phi3")
    ids = (np.random.default_rng(5).integers(3, 380, size=300)).tolist()
    against(eng, hf, ids, [ids[:8], ids[200:230]], quant, "phi3")


def test_phi3_longrope_from_gguf(tmp_path):
    """Phi-3.5's LongRoPE as llama.cpp stores it: rope_factors_short / _long tensors, the original
    context and the attention factor in the metadata; against transformers with the same rope."""
    import json

    short = np.array([1.0, 1.7, 2.3, 3.1], np.float32)  # one per rotated pair (8 of 16 dims rotate)
    path = build(tmp_path, types={"token_embd": "F32"}, arch="phi3", layers=2, context=512, window=4096, tied=False,
                 extra_tensors={"rope_factors_short.weight": short, "rope_factors_long.weight": short * 4},
                 extra_metadata={"phi3.rope.scaling.original_context_length": 512,
                                 "phi3.rope.scaling.attn_factor": 1.2})
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["rope_parameters"] = dict(cfg["rope_parameters"], rope_type="longrope", short_factor=short.tolist(),
                                  long_factor=(short * 4).tolist(), attention_factor=1.2)
    cfg["original_max_position_embeddings"] = 512
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    eng = Engine.from_pretrained(path)
    ids = (np.random.default_rng(6).integers(3, 380, size=200)).tolist()
    against(eng, hf, ids, [ids[:8]], "F32", "phi3 longrope")


def test_phi3_gguf_with_split_projections_is_refused(tmp_path):
    path = build(tmp_path, arch="phi3", extra_tensors={"blk.0.attn_q.weight": np.zeros((64, 64), np.float32)})
    with pytest.raises(GGUFError, match="attn_q.weight"):
        Engine.from_pretrained(path)


def test_sentencepiece_without_a_space_prefix(tmp_path):
    """tokenizer.ggml.add_space_prefix = false (Gemma's GGUFs): no "▁" is prepended to the text."""
    with_prefix = Engine.from_pretrained(build(tmp_path / "a", sentencepiece=True))
    without = Engine.from_pretrained(build(tmp_path / "b", sentencepiece=True,
                                           extra_metadata={"tokenizer.ggml.add_space_prefix": False}))
    a, b = with_prefix.tokenize("quick fox"), without.tokenize("quick fox")
    assert a != b
    assert with_prefix.tokenizer.backend.id_to_token(a[1]).startswith("\u2581")
    assert not without.tokenizer.backend.id_to_token(b[1]).startswith("\u2581")
    assert without.detokenize(b) == "quick fox" == with_prefix.detokenize(a)


def test_gguf_tensors_of_another_family_are_refused(tmp_path):
    bias = np.zeros(64, np.float32)
    path = build(tmp_path, extra_tensors={"blk.0.attn_q.bias": bias})  # a llama file with a bias llama has not
    with pytest.raises(GGUFError, match="attn_q.bias"):
        Engine.from_pretrained(path)
    norm = build(tmp_path / "n", arch="qwen2", extra_tensors={"blk.0.attn_q_norm.weight": np.ones(16, np.float32)})
    with pytest.raises(GGUFError, match="attn_q_norm"):
        Engine.from_pretrained(norm)


def test_tokenizer_matches_autotokenizer(tiny):
    eng = Engine.from_pretrained(tiny)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny.parent), gguf_file=tiny.name)
    for text in TEXTS:
        assert eng.tokenize(text) == tok(text)["input_ids"], text
        ids = eng.tokenize(text)
        assert eng.detokenize(ids) == tok.decode(ids, skip_special_tokens=True)


def test_chat_template_from_metadata(tiny):
    eng = Engine.from_pretrained(tiny)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny.parent), gguf_file=tiny.name)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi 🚀"}]
    assert eng.apply_chat_template(msgs) == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def test_convert_writes_a_folder_that_loads_without_the_gguf(tiny, tmp_path):
    out = convert_gguf(tiny, tmp_path / "hf")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).exists(), name
    ids = list(range(3, 40))
    direct = Engine.from_pretrained(tiny).logits(ids)
    folder = Engine.from_pretrained(out)
    assert_close(folder.logits(ids), direct, 1e-6, "converted folder")
    assert folder.tokenize(TEXTS[2]) == Engine.from_pretrained(tiny).tokenize(TEXTS[2])
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        assert_close(hf(torch.tensor([ids])).logits[0].numpy(), direct, 1e-4, "transformers on the converted folder")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert cli.main(["convert", str(tiny), str(tmp_path / "cli"), "--dtype", "bfloat16"]) == 0
    assert Engine.from_pretrained(tmp_path / "cli").info["dtype"] == "bfloat16"


def test_cli_generate_and_bench(tiny, capsys):
    assert cli.main(["generate", "-m", str(tiny), "--max-tokens", "5", "--no-chat", "hello world"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and len(out) > 1
    assert cli.main(["bench", "-m", str(tiny), "-p", "16", "-n", "4", "-r", "2", "--json", "--profile"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["test"] for r in rows] == ["pp16", "tg4"]
    assert all(r["tokens_per_s"] > 0 for r in rows) and rows[1]["GB_per_s"] > 0
    assert cli.main(["generate", "-m", str(tiny / "nope.gguf"), "x"]) == 2


@pytest.mark.parametrize("damage,match", [
    ("magic", "bad magic"),
    ("truncate", "truncated|beyond"),
    ("version", "version"),
])
def test_malformed_gguf(tiny, tmp_path, damage, match):
    blob = bytearray(tiny.read_bytes())
    p = tmp_path / "bad.gguf"
    if damage == "magic":
        blob[:4] = b"GGUX"
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "version":
        blob[4:8] = (99).to_bytes(4, "little")
    p.write_bytes(bytes(blob))
    with pytest.raises(GGUFError, match=match):
        GGUFFile(p)
    with pytest.raises(GGUFError):
        Engine.from_pretrained(p)


def test_unsupported_tensor_type(tmp_path):
    p = build(tmp_path / "k", types={"ffn_down": "Q5_0"})
    p.write_bytes(patch_tensor_info(p, "blk.0.ffn_down.weight", ggml_type=16))  # IQ2_XXS: not read
    with pytest.raises(GGUFError, match="ffn_down.weight' has ggml type 16"):
        Engine.from_pretrained(p)
