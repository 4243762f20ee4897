"""The runtime against transformers on tiny random models: logits at every position, greedy
tokens, batches, chunked prefill, bf16 weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import assert_close
from fastlm import Engine
from tiny_models import build

KINDS = ["llama", "gpt2", "qwen2", "qwen3", "phi3", "mistral", "llama3", "sharded", "odd"]


def hf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def hf_greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist()


def prompt(n, seed=0, vocab=320):
    return np.random.default_rng(seed).integers(3, vocab, size=n).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers(tiny, kind):
    path = tiny(kind)
    ids = prompt(45, seed=1)
    got = Engine.from_pretrained(path).logits(ids)
    want = hf_logits(hf_model(path), ids)
    assert got.shape == want.shape
    assert_close(got, want, 1e-4, f"{kind} logits")


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_match_transformers(tiny, kind):
    path = tiny(kind)
    ids = prompt(7, seed=2)
    got = Engine.from_pretrained(path).generate(ids, max_tokens=32, ignore_eos=True)
    assert got.token_ids == hf_greedy(hf_model(path), ids, 32)
    assert got.finish_reason == "length" and len(got.token_ids) == 32


def test_long_prompt_runs_in_chunks(tiny):
    path = tiny("llama")
    ids = prompt(600, seed=3)  # more than the executor's 256-row step
    got = Engine.from_pretrained(path).logits(ids)
    assert_close(got, hf_logits(hf_model(path), ids), 1e-4, "chunked prefill")


def family_at_300_positions(tiny, kind, arch, seed):
    """(path, transformers' model, fastlm's engine, the 300 ids) once the logits agree everywhere."""
    path = tiny(kind)
    hf = hf_model(path)
    ids = prompt(300, seed=seed)
    eng = Engine.from_pretrained(path)
    assert eng.info["architecture"] == arch
    assert_close(eng.logits(ids), hf_logits(hf, ids), 1e-4, f"{kind} logits at every position")
    return path, hf, eng, ids


def test_qwen3_over_300_positions_and_48_greedy_tokens(tiny):
    _, hf, eng, _ = family_at_300_positions(tiny, "qwen3", "Qwen3ForCausalLM", 4)
    short = prompt(12, seed=5)
    want = hf_greedy(hf, short, 48)
    assert eng.generate(short, max_tokens=48, ignore_eos=True).token_ids == want
    prompts = [short, prompt(5, seed=6), prompt(40, seed=7)]
    batched = eng.generate(prompts, max_tokens=48, ignore_eos=True)
    assert batched[0].token_ids == want
    assert [b.token_ids for b in batched[1:]] == [hf_greedy(hf, p, 48) for p in prompts[1:]]
    eng.scheduler.prefix_cache = "all"  # a prompt that extends a cached one computes only the rest
    longer = short + want[:20]
    again = eng.generate(longer, max_tokens=28, ignore_eos=True)
    assert again.usage.cached_tokens > 0 and again.token_ids == want[20:]


def test_phi3_over_300_positions_quantized_and_batched(tiny):
    path, hf, eng, ids = family_at_300_positions(tiny, "phi3", "Phi3ForCausalLM", 8)
    prompts = [prompt(12, seed=9), prompt(30, seed=10)]
    got = eng.generate(prompts, max_tokens=48, ignore_eos=True)
    assert [g.token_ids for g in got] == [hf_greedy(hf, p, 48) for p in prompts]
    q = Engine.from_pretrained(path, dtype="int8")  # the fused tensors cut, then quantized part by part
    assert set(q.info["quantized"]) >= {"model.layers.0.self_attn.qkv_proj.weight[q]",
                                        "model.layers.1.mlp.gate_up_proj.weight[up]"}
    assert_close(q.logits(ids[:40]), hf_logits(hf, ids[:40]), 5e-2, "phi3 int8")


@pytest.mark.parametrize("kind, window", [("mistral_window", 64), ("phi3_window", 48)])
def test_sliding_window_attends_through_the_window(tiny, kind, window):
    """Positions 0..400, far past the window: the same logits as transformers' sliding-window mask,
    by prefill (in 256-row chunks) and by decode, greedy past the window, batched and reused; the
    context is the model's own, not the window."""
    path = tiny(kind)
    hf = hf_model(path)
    eng = Engine.from_pretrained(path)
    assert eng.context_length == 640 and eng.info["sliding_window"] == window
    ids = prompt(401, seed=11)
    want = hf_logits(hf, ids)
    assert_close(eng.logits(ids), want, 1e-4, f"{kind} prefill past the window")
    assert_close(eng.logits(ids, path="decode"), want, 1e-4, f"{kind} decode past the window")
    full = Engine.from_pretrained(path, max_seq_len=window)  # a context within the window: no window at all
    assert full.info["sliding_window"] == 0
    assert_close(full.logits(ids[:window]), want[:window], 1e-4, f"{kind} within the window")
    short = prompt(20, seed=12)
    greedy = hf_greedy(hf, short, 96)  # the last 30 tokens see a window that has left the prompt
    assert eng.generate(short, max_tokens=96, ignore_eos=True).token_ids == greedy
    prompts = [short, prompt(70, seed=13)]
    got = eng.generate(prompts, max_tokens=48, ignore_eos=True)
    assert [g.token_ids for g in got] == [greedy[:48], hf_greedy(hf, prompts[1], 48)]
    eng.scheduler.prefix_cache = "all"
    again = eng.generate(short + greedy[:50], max_tokens=46, ignore_eos=True)
    assert again.usage.cached_tokens > 0 and again.token_ids == greedy[50:]


@pytest.mark.parametrize("kind, arch", [("gemma2", "Gemma2ForCausalLM"), ("gemma3", "Gemma3ForCausalLM")])
def test_gemma_over_300_positions_greedy_batched_and_quantized(tiny, kind, arch):
    """Every Gemma op at once: 1 + w norms, scaled embeddings, GeGLU, post norms, soft caps (Gemma 2),
    query_pre_attn_scalar, sliding (48) and global layers with their own rope, q/k norms (Gemma 3)."""
    path, hf, eng, ids = family_at_300_positions(tiny, kind, arch, 14)
    assert_close(eng.logits(ids, path="decode"), hf_logits(hf, ids), 1e-4, f"{kind} decode")
    short = prompt(12, seed=15)
    want = hf_greedy(hf, short, 48)
    prompts = [short, prompt(60, seed=16)]
    got = eng.generate(prompts, max_tokens=48, ignore_eos=True)
    assert [g.token_ids for g in got] == [want, hf_greedy(hf, prompts[1], 48)]
    eng.scheduler.prefix_cache = "all"
    again = eng.generate(short + want[:20], max_tokens=28, ignore_eos=True)
    assert again.usage.cached_tokens > 0 and again.token_ids == want[20:]
    q = Engine.from_pretrained(path, dtype="int8")
    assert_close(q.logits(ids[:40]), hf_logits(hf, ids[:40]), 5e-2, f"{kind} int8")


def test_gemma_fields_that_change_the_math_are_refused(tiny, tmp_path):
    import json
    import shutil

    for field, value, words in [("hidden_activation", "relu", "hidden_activation"),
                                ("use_bidirectional_attention", True, "use_bidirectional_attention"),
                                ("layer_types", ["full_attention"], "layer_types")]:
        dst = tmp_path / field
        shutil.copytree(tiny("gemma2"), dst)
        cfg = json.loads((dst / "config.json").read_text())
        cfg[field] = value
        (dst / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=words):
            Engine.from_pretrained(dst)


def test_phi3_longrope_short_factors(tiny, tmp_path):
    """LongRoPE (Phi-3.5 / Phi-4-mini): short factors and the attention factor (cos and sin times
    sqrt(1 + ln 4 / ln 160) here, on the rotated half of each head), within the original context;
    beyond it (transformers' long factors) is refused by name."""
    import json
    import shutil

    dst = tmp_path / "longrope"
    shutil.copytree(tiny("phi3"), dst)
    cfg = json.loads((dst / "config.json").read_text())
    rng = np.random.default_rng(0)
    cfg["max_position_embeddings"] = 640
    cfg["original_max_position_embeddings"] = 160  # where Phi-3.5's config keeps it
    cfg["rope_parameters"] = dict(cfg.get("rope_parameters") or {}, rope_type="longrope",
                                  short_factor=rng.uniform(1, 3, 4).tolist(), long_factor=rng.uniform(3, 9, 4).tolist())
    (dst / "config.json").write_text(json.dumps(cfg))
    hf = hf_model(dst)
    eng = Engine.from_pretrained(dst)
    assert eng.context_length == 160
    ids = prompt(160, seed=17)
    assert_close(eng.logits(ids), hf_logits(hf, ids), 1e-4, "longrope logits")
    short = prompt(10, seed=18)
    assert eng.generate(short, max_tokens=40, ignore_eos=True).token_ids == hf_greedy(hf, short, 40)
    with pytest.raises(ValueError, match="long_factor"):
        Engine.from_pretrained(dst, max_seq_len=400)
    cfg["rope_parameters"]["short_factor"] = [1.0] * 3
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="short_factor has 3 values"):
        Engine.from_pretrained(dst)


def test_qwen3_fields_that_change_the_math_are_refused(tiny, tmp_path):
    import json
    import shutil

    src = tiny("qwen3")
    dst = tmp_path / "sw"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(use_sliding_window=True, sliding_window=16, max_window_layers=1)
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="use_sliding_window"):
        Engine.from_pretrained(dst)
    (dst / "model.safetensors").unlink()
    shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    cfg["use_sliding_window"] = False
    (dst / "config.json").write_text(json.dumps(cfg))
    assert Engine.from_pretrained(dst).info["architecture"] == "Qwen3ForCausalLM"
    with pytest.raises(ValueError, match="q/k head norms"):  # the device decoder says it has none yet
        Engine.from_pretrained(src, device="cuda-emulated")


def test_batched_decode_equals_one_by_one(tiny):
    eng = Engine.from_pretrained(tiny("qwen2"))
    prompts = [prompt(n, seed=10 + n) for n in (3, 17, 9, 30)]
    batched = eng.generate(prompts, max_tokens=20, ignore_eos=True)
    for p, b in zip(prompts, batched):
        single = eng.generate(p, max_tokens=20, ignore_eos=True)
        assert b.token_ids == single.token_ids


def test_bf16_checkpoint_runs_in_bf16(tiny, tmp_path):
    path = build("bf16", tmp_path / "bf16")
    eng = Engine.from_pretrained(path)
    assert eng.info["dtype"] == "bfloat16"
    ids = prompt(20, seed=4)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()  # exact upcast
    assert_close(eng.logits(ids), hf_logits(ref, ids), 1e-4, "bf16 weights, fp32 activations")
    f32 = Engine.from_pretrained(path, dtype="float32")
    assert f32.info["dtype"] == "float32"
    assert_close(f32.logits(ids), hf_logits(ref, ids), 1e-4, "upcast to fp32")


def test_float32_checkpoint_as_bf16_is_close(tiny):
    path = tiny("llama")
    ids = prompt(20, seed=5)
    got = Engine.from_pretrained(path, dtype="bfloat16").logits(ids)
    assert_close(got, hf_logits(hf_model(path), ids), 0.05, "bf16-rounded weights")


def test_eos_stops_and_sampling_is_seeded(tiny):
    eng = Engine.from_pretrained(tiny("llama"))
    ids = prompt(5, seed=6)
    greedy = eng.generate(ids, max_tokens=10, ignore_eos=True).token_ids
    eng.eos_token_ids = [greedy[3]]
    stopped = eng.generate(ids, max_tokens=10)
    assert stopped.finish_reason == "stop" and stopped.token_ids == greedy[:greedy.index(greedy[3]) + 1]  # the EOS token included, as vLLM returns it
    a = eng.generate(ids, max_tokens=12, temperature=1.0, seed=7, ignore_eos=True).token_ids
    b = eng.generate(ids, max_tokens=12, temperature=1.0, seed=7, ignore_eos=True).token_ids
    assert a == b


def test_context_defaults_and_limits(tiny):
    eng = Engine.from_pretrained(tiny("llama"))
    assert eng.context_length == 640  # the model's own, not 512
    small = Engine.from_pretrained(tiny("llama"), max_seq_len=16)
    with pytest.raises(ValueError, match="context holds 16"):
        small.generate(prompt(16), max_tokens=1)
    assert small.logits(prompt(16)).shape == (16, 320)  # a full window scores, no room needed
    with pytest.raises(ValueError, match="context holds 16"):
        small.logits(prompt(17))
    out = small.generate(prompt(10), ignore_eos=True)  # no max_tokens: runs to the context
    assert out.finish_reason == "length" and len(out.token_ids) == 6
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.generate([5, 320], max_tokens=1)
    with pytest.raises(ValueError, match="empty"):
        eng.generate([], max_tokens=1)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        eng.generate("hello", max_tokens=1)
    with pytest.raises(ValueError, match="max_tokens"):
        eng.generate([5], max_tokens=0)
    with pytest.raises(ValueError, match="device"):
        Engine.from_pretrained(tiny("llama"), device="cuda")
