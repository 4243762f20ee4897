"""The generation API on tiny models: SamplingParams validation, stream == generate, stop strings
(never leaked, across token boundaries), UTF-8-safe chunks, seeds, n samples, uneven batches,
prompt reuse, logprobs, penalties and bias checked against a hand-computed reference, the OpenAI
shape, the chat and generate commands."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from fastlm import Chunk, Completion, Engine, SamplingParams, cli
from fastlm.sampling import Detokenizer, StopStrings, log_softmax
from tiny_gguf import build as build_gguf
from tiny_models import build as build_hf

pytest.importorskip("gguf")

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return build_gguf(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def eng(gguf_path):
    # float32: the real model's float function (its own Q4_1 blocks run in tests/test_gguf_types.py)
    return Engine.from_pretrained(gguf_path, dtype="float32")


@pytest.fixture(scope="module")
def ids_engine(tmp_path_factory):
    """A tiny Llama without a tokenizer: prompts are token ids."""
    return Engine.from_pretrained(build_hf("llama", tmp_path_factory.mktemp("llama")))


def ids(n, seed=0, vocab=320):
    return np.random.default_rng(seed).integers(3, vocab, size=n).tolist()


# ---- SamplingParams ----

BAD = [("max_tokens", 0), ("max_tokens", 2.5), ("max_tokens", True), ("temperature", -0.1),
       ("temperature", float("nan")), ("temperature", "hot"), ("top_k", -2), ("top_k", 1.5), ("top_p", 0.0),
       ("top_p", 1.01), ("min_p", -0.1), ("min_p", 1.5), ("repetition_penalty", 0.0),
       ("repetition_penalty", float("inf")), ("presence_penalty", 2.5), ("frequency_penalty", -3),
       ("n", 0), ("n", "2"), ("stop", ""), ("stop", ["ok", ""]), ("stop", 5), ("stop_token_ids", [-1]),
       ("stop_token_ids", "2"), ("ignore_eos", 1), ("min_tokens", -1), ("seed", -5), ("seed", 1.5),
       ("logprobs", 21), ("logprobs", -1), ("logit_bias", [1, 2]), ("logit_bias", {"x": 1.0}),
       ("logit_bias", {3: 101.0}), ("logit_bias", {-3: 1.0})]


@pytest.mark.parametrize("name,value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_every_field_is_validated(name, value):
    with pytest.raises(ValueError, match=name):
        SamplingParams(**{name: value})


def test_params_defaults_and_overrides(eng):
    p = SamplingParams()
    assert p.max_tokens is None and p.temperature == 0 and p.n == 1  # until EOS or the context, greedy
    assert SamplingParams(stop="x").stop == ("x",) and SamplingParams(logit_bias={"7": 2}).logit_bias == {7: 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=5, max_tokens=2)
    with pytest.raises(TypeError, match="unknown sampling parameter 'temprature'"):
        eng.generate(PROMPT, temprature=1.0)
    with pytest.raises(TypeError, match="SamplingParams"):
        eng.generate(PROMPT, {"temperature": 1.0})
    with pytest.raises(ValueError, match="stop_token_ids names token 99999"):
        eng.generate(PROMPT, stop_token_ids=[99999])
    with pytest.raises(ValueError, match="max_tokens"):
        eng.generate(PROMPT, SamplingParams(), max_tokens=-1)


# ---- streaming ----

@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.9, seed=3), dict(temperature=1.2, top_k=40, top_p=0.9, seed=4)])
def test_stream_equals_generate(eng, kw):
    full = eng.generate(PROMPT, max_tokens=40, ignore_eos=True, **kw)
    stream = eng.stream(PROMPT, max_tokens=40, ignore_eos=True, **kw)
    chunks = list(stream)
    assert all(isinstance(c, Chunk) for c in chunks)
    assert [c.token_id for c in chunks] == full.token_ids
    assert "".join(c.text for c in chunks) == full.text
    whole = eng.detokenize(full.token_ids)
    if "\ufffd" not in whole:  # random byte tokens may form invalid UTF-8, rendered by position
        assert full.text == whole
    assert [c.finish_reason for c in chunks] == [None] * 39 + ["length"]
    assert stream.completion.token_ids == full.token_ids


def test_breaking_out_of_a_stream_stops_decoding(eng):
    stream = eng.stream(PROMPT, max_tokens=50, ignore_eos=True)
    got = [next(stream) for _ in range(3)]
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)
    partial = stream.completion  # what was generated before the stop
    assert partial.token_ids == [c.token_id for c in got] and partial.finish_reason == "abort"
    again = eng.generate(PROMPT, max_tokens=5, ignore_eos=True)  # the engine is free again
    assert again.token_ids[:3] == [c.token_id for c in got]


def test_a_new_call_runs_beside_an_open_stream(eng):
    """The scheduler batches them: neither is interrupted, each gives what it gives alone."""
    alone = eng.generate(PROMPT, max_tokens=30, ignore_eos=True).token_ids
    other_alone = eng.generate("other", max_tokens=3, ignore_eos=True).token_ids
    stream = eng.stream(PROMPT, max_tokens=30, ignore_eos=True)
    first = next(stream)
    other = eng.generate("other", max_tokens=3, ignore_eos=True)
    rest = list(stream)
    assert [first.token_id] + [c.token_id for c in rest] == alone
    assert other.token_ids == other_alone


def test_multibyte_characters_never_split():
    """Byte-level BPE splits CJK and emoji across tokens; a delta never holds half a character."""
    from fastlm.tokenizer import Tokenizer  # noqa: F401 (the engine's tokenizer type)

    tok = build_gguf_tokenizer()
    text = "日本語のテキスト, Ελληνικά, русский, emoji 🚀🎉 and Ünïcödé; unseen: 漢字 🦊🧪 ∑∫"
    toks = tok.encode(text)
    d = Detokenizer(lambda i: tok.decode(i, skip_special_tokens=True), [])
    deltas = [d.add(t) for t in toks] + [d.flush()]
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) == text
    assert any(x == "" for x in deltas)  # some tokens were held back


def build_gguf_tokenizer():
    import tempfile
    from pathlib import Path

    from fastlm.tokenizer import Tokenizer
    from fastlm.formats.gguf import GGUFFile, tokenizer_from_gguf

    with tempfile.TemporaryDirectory() as d:
        f = GGUFFile(build_gguf(Path(d)))
        backend, cfg = tokenizer_from_gguf(f)
        return Tokenizer(backend, cfg)


def test_invalid_bytes_are_released_not_held_forever():
    def dec(i):
        return bytes(i).decode("utf-8", errors="replace")
    d = Detokenizer(dec, [])
    out = [d.add(t) for t in (0xF0, 0x9F, 0x9A, 0x41)]  # 3 bytes of a 4-byte character, then 'A'
    assert out == ["", "", "", "\ufffdA"]
    d = Detokenizer(dec, [])
    assert [d.add(t) for t in (0x41, 0xF0, 0x9F, 0x9A, 0x80)] == ["A", "", "", "", "🚀"]
    d = Detokenizer(dec, [])
    out = [d.add(0xF0) for _ in range(40)] + [d.flush()]
    assert "".join(out) == dec([0xF0] * 40) and sum(1 for x in out if x) > 1  # released in pieces


# ---- stop strings ----

def test_stop_strings_held_back_and_cut(eng):
    """Stop strings cut out of a sampled text, wherever its token boundaries fall."""
    kw = dict(max_tokens=60, ignore_eos=True, temperature=0.7, top_k=8, seed=5)
    full = eng.generate(PROMPT, **kw)
    pieces = [eng.detokenize(full.token_ids[:k]) for k in range(len(full.token_ids) + 1)]
    text = full.text
    tried = 0
    for start in range(2, len(text) - 4, 3):
        stop = text[start:start + 4]
        if not stop.strip() or "\ufffd" in stop or text.find(stop) != start:
            continue
        across = not any(len(p) > start and len(p) < start + 4 for p in pieces)  # inside one token or across
        chunks = list(eng.stream(PROMPT, stop=["zzzz", stop], **kw))
        released = ""
        for c in chunks:
            released += c.text
            assert stop not in released, "a stop string leaked into the stream"
            assert text.startswith(released)
        assert released == text[:start]
        assert chunks[-1].finish_reason == "stop"
        got = eng.generate(PROMPT, stop=["zzzz", stop], **kw)
        assert got.text == text[:start] and got.finish_reason == "stop" and got.choices[0].stop_reason == stop
        tried += 1 + across
    assert tried >= 6


def test_stop_string_machine():
    s = StopStrings(["</end>", "STOP"])
    assert s.feed("hello <") == ("hello ", None)     # "<" could start "</end>"
    assert s.feed("/en") == ("", None)
    assert s.feed("x and S") == ("</enx and ", None)
    assert s.feed("TOP!") == ("", "STOP")
    assert s.released == "hello </enx and "
    early = StopStrings(["ab"])
    assert early.feed("xab", check=False) == ("xab", None)  # before min_tokens nothing is matched


def test_stop_token_ids_and_min_tokens(eng):
    greedy = eng.generate(PROMPT, max_tokens=12, ignore_eos=True).token_ids
    tok = greedy[4]
    first = greedy.index(tok)
    out = eng.generate(PROMPT, max_tokens=12, ignore_eos=True, stop_token_ids=[tok])
    assert out.token_ids == greedy[:first + 1] and out.finish_reason == "stop"
    assert out.choices[0].stop_reason == tok
    assert out.text == eng.detokenize(greedy[:first])  # the stop token's text is not part of the output
    late = eng.generate(PROMPT, max_tokens=12, ignore_eos=True, stop_token_ids=[tok], min_tokens=first + 2)
    assert len(late.token_ids) >= first + 2 and tok not in late.token_ids[:first + 1]


# ---- seeds, n, batches ----

def test_seeds_reproduce_alone_or_batched(eng):
    kw = dict(max_tokens=25, temperature=1.0, seed=11, ignore_eos=True)
    a = eng.generate(PROMPT, **kw)
    b = eng.generate(PROMPT, **kw)
    assert a.token_ids == b.token_ids
    assert eng.generate(PROMPT, **{**kw, "seed": 12}).token_ids != a.token_ids
    batch = eng.generate(["Hello there", PROMPT, "x"], **kw)
    assert batch[1].token_ids == a.token_ids
    many = eng.generate(PROMPT, n=3, **kw)
    assert many.choices[0].token_ids == a.token_ids
    assert len({tuple(c.token_ids) for c in many.choices}) == 3  # the samples differ from each other
    assert eng.generate(PROMPT, n=3, **kw).choices[2].token_ids == many.choices[2].token_ids


def test_n_samples_and_uneven_batches_equal_single_runs(ids_engine):
    prompts = [ids(n, seed=n) for n in (3, 21, 8, 40, 1)]
    singles = [ids_engine.generate(p, max_tokens=16, ignore_eos=True) for p in prompts]
    batched = ids_engine.generate(prompts, max_tokens=16, ignore_eos=True, n=2)
    assert len(batched) == len(prompts)
    for s, b in zip(singles, batched):
        assert [c.index for c in b.choices] == [0, 1]
        assert b.choices[0].token_ids == b.choices[1].token_ids == s.token_ids  # greedy: n copies
        assert b.usage.completion_tokens == 32 and b.usage.prompt_tokens == s.usage.prompt_tokens


def test_batch_decodes_in_one_step_per_token(ids_engine, monkeypatch):
    calls = []
    model = ids_engine.slots.model
    real = model.decode

    class Spy:  # the executor is a C++ object: wrap it
        def __getattr__(self, name):
            return getattr(model, name)

        def decode(self, slots, toks):
            calls.append(len(slots))
            return real(slots, toks)

    monkeypatch.setattr(ids_engine.slots, "model", Spy())
    ids_engine.generate([ids(5), ids(9, seed=1), ids(2, seed=2)], max_tokens=6, ignore_eos=True, n=2)
    assert calls == [6] * 5  # 6 samples, 5 decode steps after the first token


# ---- prompt reuse ----

def test_prompt_reuse_computes_only_the_suffix(ids_engine, monkeypatch):
    monkeypatch.setattr(ids_engine.scheduler, "prefix_cache", "all")  # every cached token, not whole chunks
    p = ids(30, seed=5)
    first = ids_engine.generate(p, max_tokens=10, ignore_eos=True)
    assert first.usage.cached_tokens == 0 or first.usage.cached_tokens < len(p)
    longer = p + first.token_ids + ids(7, seed=6)
    warm = ids_engine.generate(longer, max_tokens=12, ignore_eos=True)
    assert warm.usage.cached_tokens == len(p) + 10 - 1  # the last sampled token was never fed
    assert warm.timings.prefill_tokens == len(longer) - warm.usage.cached_tokens
    ids_engine.reset()
    cold = ids_engine.generate(longer, max_tokens=12, ignore_eos=True)
    assert cold.usage.cached_tokens == 0 and cold.token_ids == warm.token_ids
    again = ids_engine.generate(longer, max_tokens=12, ignore_eos=True)  # the whole prompt is cached
    assert again.usage.cached_tokens == len(longer) - 1 and again.token_ids == cold.token_ids


def test_exact_reuse_lends_whole_prefill_chunks_the_same_bits_as_a_cold_run(ids_engine):
    assert ids_engine.scheduler.prefix_cache == "exact"  # the default
    ids_engine.reset()
    p = ids(600, seed=11)
    cold = ids_engine.generate(p, max_tokens=8, ignore_eos=True, logprobs=2)
    assert cold.usage.cached_tokens == 0
    again = ids_engine.generate(p, max_tokens=8, ignore_eos=True, logprobs=2)
    assert again.usage.cached_tokens == 512  # two whole chunks; the tail of 88 is computed again
    assert again.token_ids == cold.token_ids
    assert [x.logprob for x in again.logprobs] == [x.logprob for x in cold.logprobs]  # bit for bit
    branch = p[:300] + ids(40, seed=12)  # shares one whole chunk and 44 tokens of the next
    warm = ids_engine.generate(branch, max_tokens=8, ignore_eos=True, logprobs=2)
    assert warm.usage.cached_tokens == 256 and warm.timings.prefill_tokens == len(branch) - 256
    ids_engine.reset()
    fresh = ids_engine.generate(branch, max_tokens=8, ignore_eos=True, logprobs=2)
    assert fresh.usage.cached_tokens == 0 and fresh.token_ids == warm.token_ids
    assert [x.logprob for x in fresh.logprobs] == [x.logprob for x in warm.logprobs]
    short = ids(100, seed=13)  # under one chunk: nothing is lent in exact mode
    ids_engine.generate(short, max_tokens=4, ignore_eos=True)
    assert ids_engine.generate(short + [5], max_tokens=4, ignore_eos=True).usage.cached_tokens == 0
    # the tokens a call generated were computed by decode, never lent in exact mode
    ids_engine.reset()
    first = ids_engine.generate(p[:250], max_tokens=20, ignore_eos=True)
    grown = p[:250] + first.token_ids + ids(10, seed=14)
    assert ids_engine.generate(grown, max_tokens=2, ignore_eos=True).usage.cached_tokens == 0


def test_prefix_cache_setting_is_checked(ids_engine, tmp_path):
    from fastlm.cli import PREFIX_MODES
    from fastlm.slots import REUSE, prefix_mode
    assert PREFIX_MODES == REUSE  # the CLI's choices, spelled out there
    assert [prefix_mode(v) for v in (True, False, "exact", "all", "off")] == ["exact", "off", "exact", "all", "off"]
    for bad in ("yes", 1, None, "ALL"):
        with pytest.raises(ValueError, match="prefix_cache"):
            prefix_mode(bad)
    with pytest.raises(ValueError, match="prefix_cache"):
        Engine.from_pretrained(tmp_path / "nothing-here", prefix_cache="sometimes")  # before any loading


def test_chat_turns_reuse_the_cache(eng, monkeypatch):
    monkeypatch.setattr(eng.scheduler, "prefix_cache", "all")
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]
    one = eng.chat(msgs, max_tokens=12, ignore_eos=True)
    assert one.chat
    msgs += [{"role": "assistant", "content": one.text}, {"role": "user", "content": "and then?"}]
    two = eng.chat(msgs, max_tokens=12, ignore_eos=True)
    assert two.usage.cached_tokens > one.usage.prompt_tokens
    eng.reset()
    cold = eng.chat(msgs, max_tokens=12, ignore_eos=True)
    assert cold.usage.cached_tokens == 0 and cold.token_ids == two.token_ids and cold.text == two.text
    stream = eng.chat_stream(msgs, max_tokens=12, ignore_eos=True)
    assert "".join(c.text for c in stream) == cold.text
    assert stream.completion.usage.cached_tokens == len(eng.tokenize(eng.apply_chat_template(msgs))) - 1 or \
        stream.completion.usage.cached_tokens > 0
    assert eng.apply_chat_template(msgs).endswith("<s>assistant: ")


# ---- logprobs, penalties, bias: against a step-by-step reference over full-prefix logits ----

def reference_greedy(engine, prompt, n, process):
    out = []
    for _ in range(n):
        z = engine.logits(prompt + out)[-1].astype(np.float64)
        out.append(int(np.argmax(process(z, out))))
    return out


def test_logprobs_match_the_model(ids_engine):
    p = ids(12, seed=7)
    got = ids_engine.generate(p, max_tokens=6, ignore_eos=True, logprobs=3)
    assert len(got.logprobs) == 6
    for k, lp in enumerate(got.logprobs):
        ref = log_softmax(ids_engine.logits(p + got.token_ids[:k])[-1])
        assert lp.token_id == got.token_ids[k]
        assert abs(lp.logprob - ref[lp.token_id]) < 1e-4
        assert [t for t, _, _ in lp.top] == list(np.argsort(-ref, kind="stable")[:3])
        assert lp.top[0][0] == lp.token_id  # greedy picks the most likely
    chunks = list(ids_engine.stream(p, max_tokens=6, ignore_eos=True, logprobs=0))
    assert [c.logprob for c in chunks] == pytest.approx([x.logprob for x in got.logprobs], abs=1e-6)
    assert all(c.top_logprobs == [] for c in chunks)


def test_repetition_presence_frequency_and_bias(ids_engine):
    p = ids(6, seed=8)

    def rep(z, out, r=1.8):
        seen = sorted(set(p) | set(out))
        z[seen] = np.where(z[seen] > 0, z[seen] / r, z[seen] * r)
        return z
    assert ids_engine.generate(p, max_tokens=8, ignore_eos=True, repetition_penalty=1.8).token_ids == \
        reference_greedy(ids_engine, p, 8, rep)

    def pres_freq(z, out):
        for t in set(out):
            z[t] -= 0.7 * out.count(t) + 1.5
        return z
    assert ids_engine.generate(p, max_tokens=8, ignore_eos=True, presence_penalty=1.5,
                               frequency_penalty=0.7).token_ids == reference_greedy(ids_engine, p, 8, pres_freq)
    forced = ids_engine.generate(p, max_tokens=5, ignore_eos=True, logit_bias={17: 100})
    assert forced.token_ids == [17] * 5
    banned = ids_engine.generate(p, max_tokens=8, ignore_eos=True, logit_bias={t: -100 for t in range(100)})
    assert all(t >= 100 for t in banned.token_ids)


def test_truncation_samplers(ids_engine):
    p = ids(9, seed=9)
    greedy = ids_engine.generate(p, max_tokens=10, ignore_eos=True).token_ids
    for kw in (dict(top_k=1), dict(top_p=1e-9), dict(min_p=1.0)):
        assert ids_engine.generate(p, max_tokens=10, ignore_eos=True, temperature=1.5, seed=1, **kw).token_ids == greedy
    # top_k=5: every sampled token is among the 5 most likely at its step
    got = ids_engine.generate(p, max_tokens=10, ignore_eos=True, temperature=5.0, top_k=5, seed=2).token_ids
    for k, t in enumerate(got):
        z = ids_engine.logits(p + got[:k])[-1]
        assert t in np.argsort(-z)[:5]


def test_sampling_follows_the_distribution(ids_engine):
    """1000 first tokens at temperature 1 against the model's softmax (a chi-square-like bound)."""
    p = ids(4, seed=10)
    probs = np.exp(log_softmax(ids_engine.logits(p)[-1]))
    batch = ids_engine.generate([p] * 4, max_tokens=1, temperature=1.0, seed=0, n=250)
    draws = [c.token_ids[0] for comp in batch for c in comp.choices]
    top = np.argsort(-probs)[:3]
    for t in top:
        expected = probs[t] * len(draws)
        assert abs(draws.count(int(t)) - expected) < 5 * np.sqrt(expected) + 3


# ---- results ----

def test_completion_shape_and_openai_dict(eng):
    c = eng.generate(PROMPT, max_tokens=5, n=2, temperature=0.8, seed=1, ignore_eos=True, logprobs=2)
    assert isinstance(c, Completion) and len(c.choices) == 2 and c.text == c.choices[0].text
    assert c.usage.prompt_tokens == len(eng.tokenize(PROMPT)) and c.usage.completion_tokens == 10
    assert c.usage.total_tokens == c.usage.prompt_tokens + 10
    t = c.timings
    assert t.time_to_first_token_s > 0 and t.prefill_tokens_per_s > 0 and t.decode_tokens_per_s > 0
    d = json.loads(json.dumps(c.to_openai()))
    assert d["object"] == "text_completion" and d["usage"]["total_tokens"] == c.usage.total_tokens
    assert [ch["index"] for ch in d["choices"]] == [0, 1] and d["choices"][1]["text"] == c.choices[1].text
    assert len(d["choices"][0]["logprobs"]["tokens"]) == 5
    assert "prompt_tokens_details" in d["usage"]
    chat = eng.chat([{"role": "user", "content": "hi"}], max_tokens=3, logprobs=1).to_openai()
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert len(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 1


def test_bad_prompts_raise(eng, ids_engine):
    with pytest.raises(ValueError, match="empty"):
        eng.generate("")
    with pytest.raises(TypeError, match="one prompt"):
        eng.stream(["a", "b"])
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        ids_engine.generate(ids(3), stop=["x"], max_tokens=2)
    with pytest.raises(TypeError, match="messages"):
        eng.chat("not a conversation")
    with pytest.raises(ValueError, match="context holds"):
        eng.generate("word " * 400)


# ---- the command line ----

def test_cli_generate_sampling_flags(gguf_path, capsys):
    assert cli.main(["generate", "-m", str(gguf_path), "--no-chat", "--max-tokens", "6", "--temperature", "0.8",
                     "--top-p", "0.9", "--top-k", "20", "--seed", "3", "-n", "2", "--ignore-eos", PROMPT]) == 0
    out = capsys.readouterr().out
    assert "--- sample 0 (length) ---" in out and "--- sample 1 (length) ---" in out
    full = Engine.from_pretrained(gguf_path).generate(PROMPT, max_tokens=30, ignore_eos=True).text
    stop = full.strip()[5:9]
    assert cli.main(["generate", "-m", str(gguf_path), "--no-chat", "--max-tokens", "30", "--ignore-eos",
                     "--stop", stop, "-v", PROMPT]) == 0
    got = capsys.readouterr()
    assert got.out == full[:full.index(stop)] + "\n"
    assert "prompt tokens" in got.err
    # several samples of greedy decoding would all be the same text: refused, and said why
    assert cli.main(["generate", "-m", str(gguf_path), "-n", "3", PROMPT]) == 2
    assert "-n 3 needs --temperature above 0" in capsys.readouterr().err


def test_cli_chat_repl(gguf_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nand more\n/reset\nhello\n/exit\nignored\n"))
    assert cli.main(["chat", "-m", str(gguf_path), "--system", "Be brief.", "--max-tokens", "5", "--ignore-eos",
                     "-v"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert len(lines) == 3 and lines[0] == lines[2]  # after /reset the same question gets the same answer
    assert "[conversation reset]" in cap.err
    cached = [int(x.split("(")[1].split()[0]) for x in cap.err.splitlines() if "prompt tokens" in x]
    assert cached[1] > 0  # the second turn reused the first
