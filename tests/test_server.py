"""fastlm serve: the official openai client against the app on loopback, over the real model
(SmolLM2-135M-Instruct in its own Q4_1 blocks): completions and chat, streamed and not, SSE
framing, n, stop strings, logprobs, every error status, health while loading, metrics, a client
that disconnects, greedy results across concurrent requests, the CLI, and the chat page in
headless Chromium."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sse_starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from fastlm import Engine  # noqa: E402
from fastlm.hub import DEFAULT_MODEL, resolve  # noqa: E402
from fastlm.server import Server, create_app, is_loopback  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "test-key"
NAME = "smollm2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=1024, max_slots=16)


@pytest.fixture(scope="module")
def url(engine):
    with Server(create_app(engine, model_name=NAME, api_key=KEY)) as u:
        yield u


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_idle(url: str, timeout: float = 10.0) -> dict[str, float]:
    t0 = time.monotonic()
    while True:
        m = metrics(url)
        if m["fastlm_busy_slots"] == 0 and m["fastlm_queue_depth"] == 0:
            return m
        assert time.monotonic() - t0 < timeout, f"slots still busy after {timeout} s: {m}"
        time.sleep(0.02)


# ---- completions and chat ----

def test_models(client, url, engine):
    models = client.models.list().data
    assert [m.id for m in models] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    card = httpx.get(url + f"/v1/models/{NAME}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert card["context_length"] == 1024 and card["weight_bytes"] == engine.model.weight_bytes


def test_completion_equals_the_engine(client, engine):
    prompt = "The capital of France is"
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    want = engine.generate(prompt, max_tokens=12)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == NAME
    assert [c.text for c in r.choices] == [want.text]
    assert r.choices[0].finish_reason == want.choices[0].finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (want.usage.prompt_tokens, 12)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_completion_defaults_to_16_tokens_and_takes_token_ids_and_several_prompts(client, engine):
    r = client.completions.create(model=NAME, prompt="Once upon a time", temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16  # OpenAI's default max_tokens for completions
    ids = engine.tokenize("Once upon a time")
    by_ids = client.completions.create(model=NAME, prompt=ids, temperature=0, max_tokens=16,
                                       extra_body={"ignore_eos": True})
    assert by_ids.choices[0].text == r.choices[0].text
    two = client.completions.create(model=NAME, prompt=["Once upon a time", "The capital of France is"],
                                    temperature=0, max_tokens=8)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.text for c in two.choices] == [engine.generate(p, max_tokens=8).text
                                             for p in ("Once upon a time", "The capital of France is")]


def test_chat_equals_the_engine(client, engine):
    r = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=30, temperature=0)
    want = engine.chat(QUESTION, max_tokens=30)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text and "Paris" in want.text
    assert r.choices[0].finish_reason == want.choices[0].finish_reason
    assert r.usage.prompt_tokens == want.usage.prompt_tokens
    assert r.usage.completion_tokens == want.usage.completion_tokens
    # max_completion_tokens is chat's name for it; content parts of type text are joined
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                          {"type": "text", "text": "of France?"}]}]
    r2 = client.chat.completions.create(model=NAME, messages=parts, max_completion_tokens=5, temperature=0)
    assert r2.usage.completion_tokens == 5 and r2.choices[0].finish_reason == "length"
    assert want.text.startswith(r2.choices[0].message.content)


def test_chat_stream_is_openai_shaped(client, engine):
    want = engine.chat(QUESTION, max_tokens=30)
    chunks = list(client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=30, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    body = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in body) == want.text
    assert [c.choices[0].finish_reason for c in body][-1] == want.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == want.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=30, temperature=0,
                                                stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked


def test_completion_stream(client, engine):
    prompt = "def fibonacci(n):"
    want = engine.generate(prompt, max_tokens=20, ignore_eos=True)
    chunks = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=20, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_raw_sse_framing(url):
    body = {"model": NAME, "messages": QUESTION, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes()).decode("utf-8")
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    datas = [e for e in events[:-2] if not e.startswith(":")]  # (": ping" comments are SSE keep-alives)
    assert all(e.startswith("data: ") and "\n" not in e for e in datas)
    parsed = [json.loads(e[len("data: "):]) for e in datas]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["completion_tokens"] == 4
    assert parsed[-2]["choices"][0]["finish_reason"] == "length" and parsed[-2]["choices"][0]["delta"] == {}


def test_n_samples(client):
    r = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7, n=3)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]  # seeded
    full = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=12, temperature=1.0, seed=7, n=3,
                                          extra_body={"ignore_eos": True})
    assert full.usage.completion_tokens == 3 * 12 and len({c.message.content for c in full.choices}) > 1
    chunks = list(client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=12, temperature=1.0,
                                                 seed=7, n=3, stream=True))
    texts = ["", "", ""]
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == [c.message.content for c in r.choices]
    assert sum(1 for c in chunks for ch in c.choices if ch.delta.role == "assistant") == 3


def test_stop_string_split_across_tokens(client, engine):
    prompt = "The capital of France is"
    full = engine.generate(prompt, max_tokens=30, ignore_eos=True)
    pieces = [engine.detokenize(full.token_ids[:k]) for k in range(len(full.token_ids) + 1)]
    # a stop string that starts inside one token and ends inside the next
    k = next(k for k in range(2, len(pieces) - 1) if len(pieces[k]) - len(pieces[k - 1]) >= 3
             and len(pieces[k + 1]) - len(pieces[k]) >= 2)
    stop = pieces[k][-2:] + pieces[k + 1][len(pieces[k]):len(pieces[k]) + 2]
    want = full.text[:full.text.index(stop)]
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0, stop=[stop, "zzzz"],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0, stop=stop,
                                            stream=True, extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].text for c in chunks)
    assert text == want and stop not in text and chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs(client, engine):
    want = engine.chat(QUESTION, max_tokens=6, logprobs=3)
    r = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    got = r.choices[0].logprobs.content
    assert len(got) == 6
    for g, w in zip(got, want.logprobs):
        assert g.logprob == pytest.approx(w.logprob, abs=1e-5)
        assert len(g.top_logprobs) == 3 and g.top_logprobs[0].logprob >= g.top_logprobs[-1].logprob
        assert bytes(g.bytes).decode("utf-8", "replace") == g.token
    assert "".join(g.token for g in got) == r.choices[0].message.content
    chunks = list(client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=6, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True))
    streamed = [lp for c in chunks for ch in c.choices if ch.logprobs for lp in ch.logprobs.content]
    assert [x.logprob for x in streamed] == pytest.approx([x.logprob for x in got], abs=1e-6)
    c = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=5, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == c.choices[0].text and lp.text_offset[0] == 0


def test_sampling_extensions_and_penalties_are_taken(client, engine):
    kw = dict(max_tokens=20, temperature=0.9, seed=3, top_k=20, min_p=0.05, repetition_penalty=1.2)
    want = engine.chat(QUESTION, **kw, presence_penalty=0.5, frequency_penalty=0.3)
    r = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=20, temperature=0.9, seed=3,
                                       presence_penalty=0.5, frequency_penalty=0.3,
                                       extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.2})
    assert r.choices[0].message.content == want.text
    paris = engine.tokenize(" Paris")[0]
    banned = client.completions.create(model=NAME, prompt="The capital of France is", max_tokens=3, temperature=0,
                                       logit_bias={str(paris): -100})
    assert "Paris" not in banned.choices[0].text.split(" ", 2)[1]


# ---- errors ----

def error_of(excinfo) -> dict:
    body = excinfo.value.body
    return body.get("error", body) if isinstance(body, dict) else {}


def test_errors(client, url):
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert error_of(e)["code"] == "invalid_api_key"
    r = httpx.get(url + "/v1/models", timeout=10)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert error_of(e)["code"] == "model_not_found" and error_of(e)["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=QUESTION, temperature="hot")
    assert error_of(e)["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=QUESTION, top_p=3.0)
    assert error_of(e)["param"] == "top_p"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=[])
    assert error_of(e)["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as e:  # not half-served: a field not implemented is named
        client.chat.completions.create(model=NAME, messages=QUESTION, extra_body={"prediction": {
            "type": "content", "content": "x"}})
    assert error_of(e)["param"] == "prediction" and error_of(e)["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt="x", extra_body={"tools": [{"type": "function", "function": {
            "name": "f"}}]})
    assert error_of(e)["param"] == "tools" and "chat/completions" in error_of(e)["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=QUESTION, extra_body={"temprature": 0.5})
    assert error_of(e)["param"] == "temprature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=[{"role": "wizard", "content": "hi"}])
    assert "role" in error_of(e)["message"]
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(url + "/v1/nothing", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_context_overflow_is_400_with_the_numbers(client, engine):
    long = "word " * 1500
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=NAME, prompt=long, max_tokens=4)
    err = error_of(e)
    n = len(engine.tokenize(long))
    assert err["code"] == "context_length_exceeded" and str(n) in err["message"] and "1024" in err["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": long}], stream=True)
    assert error_of(e)["code"] == "context_length_exceeded"  # refused before the stream starts


def test_queue_full_is_429():
    eng = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=256, max_slots=1, max_queue=0)
    with Server(create_app(eng, model_name=NAME)) as u:
        c = openai.OpenAI(base_url=u + "/v1", api_key="-", max_retries=0, timeout=60)
        first = c.completions.create(model=NAME, prompt="Once upon a time", max_tokens=200, stream=True,
                                     temperature=0, extra_body={"ignore_eos": True})
        next(iter(first))  # the first call holds the only slot
        with pytest.raises(openai.RateLimitError) as e:
            c.completions.create(model=NAME, prompt="Hello", max_tokens=4)
        assert "busy" in error_of(e)["message"] and e.value.status_code == 429
        first.close()
        wait_idle(u)
        assert c.completions.create(model=NAME, prompt="Hello", max_tokens=4).usage.completion_tokens == 4


# ---- health and metrics ----

def test_health_is_503_while_loading_then_200(engine):
    go = threading.Event()

    def load():
        go.wait(30)
        return engine

    with Server(create_app(load, model_name=NAME)) as u:
        r = httpx.get(u + "/health", timeout=10)
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        r = httpx.get(u + "/v1/models", timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        assert metrics(u)["fastlm_up"] == 0
        go.set()
        t0 = time.monotonic()
        while httpx.get(u + "/health", timeout=10).status_code != 200:
            assert time.monotonic() - t0 < 10
            time.sleep(0.01)
        assert httpx.get(u + "/v1/models", timeout=10).json()["data"][0]["id"] == NAME


def test_a_failed_load_is_reported():
    seen = []

    def load():
        raise FileNotFoundError("no such model: nowhere.gguf")

    with Server(create_app(load, model_name=NAME, on_load_error=seen.append)) as u:
        t0 = time.monotonic()
        while not seen:
            assert time.monotonic() - t0 < 10
            time.sleep(0.01)
        r = httpx.get(u + "/health", timeout=10)
        assert r.status_code == 503 and "nowhere.gguf" in r.json()["error"]
        r = httpx.post(u + "/v1/completions", json={"model": NAME, "prompt": "hi"}, timeout=10)
        assert r.status_code == 503 and "nowhere.gguf" in r.json()["error"]["message"]


def test_metrics(client, url):
    before = metrics(url)
    client.completions.create(model=NAME, prompt="Hello", max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    m = wait_idle(url)
    assert m["fastlm_up"] == 1 and m["fastlm_max_slots"] == 16
    assert m["fastlm_requests_total"] == before["fastlm_requests_total"] + 1
    assert m["fastlm_generation_tokens_total"] == before["fastlm_generation_tokens_total"] + 5
    assert m["fastlm_requests_finished_total"] >= before["fastlm_requests_finished_total"] + 1
    assert m["fastlm_time_to_first_token_seconds_count"] == before["fastlm_time_to_first_token_seconds_count"] + 1
    assert 0 < m['fastlm_time_to_first_token_seconds{quantile="0.5"}'] < 60
    assert m["fastlm_generation_tokens_per_second"] >= 0
    text = httpx.get(url + "/metrics", timeout=10).text
    assert "# TYPE fastlm_requests_total counter" in text and "# TYPE fastlm_busy_slots gauge" in text


# ---- cancellation and concurrency ----

def test_a_client_that_disconnects_frees_its_slot(url):
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 800, "temperature": 0, "stream": True,
            "ignore_eos": True}
    before = metrics(url)["fastlm_requests_cancelled_total"]
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        it = r.iter_lines()
        got = [next(it) for _ in range(10)]
        assert any(x.startswith("data: ") for x in got)
        assert metrics(url)["fastlm_busy_slots"] == 1
    m = wait_idle(url)  # the connection closed mid-stream
    assert m["fastlm_requests_cancelled_total"] == before + 1
    assert m["fastlm_cancel_steps_max"] <= 1  # freed by the step after the cancel at the latest


def test_a_non_stream_client_that_disconnects_is_cancelled(url):
    before = metrics(url)["fastlm_requests_cancelled_total"]
    body = {"model": NAME, "prompt": "Once upon a time", "max_tokens": 900, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/completions", json=body, timeout=1.0, headers={"Authorization": f"Bearer {KEY}"})
    m = wait_idle(url)
    assert m["fastlm_requests_cancelled_total"] == before + 1


def test_greedy_results_are_identical_whatever_runs_beside_them(client, engine):
    prompts = [f"Write a short sentence about the number {k}." for k in range(12)]
    prompts[5] = prompts[2]  # the same prompt twice, in other slots
    alone = {p: engine.chat([{"role": "user", "content": p}], max_tokens=24, ignore_eos=True).text for p in prompts}
    for order_seed in (0, 1):
        order = list(range(len(prompts)))
        random.Random(order_seed).shuffle(order)
        got = {}

        def ask(k):
            r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": prompts[k]}],
                                               max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
            got[k] = r.choices[0].message.content

        threads = []
        for k in order:
            threads.append(threading.Thread(target=ask, args=(k,)))
            threads[-1].start()
            time.sleep(random.Random(k).random() * 0.05)  # arrivals spread across steps
        for t in threads:
            t.join(120)
        assert {k: got[k] for k in range(len(prompts))} == {k: alone[prompts[k]] for k in range(len(prompts))}


def test_soak_with_disconnects(url):
    """A short soak: 24 clients for 15 s, a fifth of them dropping mid-stream; every response that
    ran to its end is whole and well-formed, and every slot is free afterwards
    (benchmarks/serve.py runs the long one)."""
    stop_at = time.monotonic() + 15
    problems, done, dropped = [], [0], [0]

    def client_loop(k):
        rng = random.Random(k)
        while time.monotonic() < stop_at:
            drop = rng.random() < 0.2
            body = {"model": NAME, "messages": [{"role": "user", "content": f"Count to {rng.randint(3, 9)}."}],
                    "max_tokens": rng.randint(4, 24), "temperature": 0.7, "seed": k, "stream": True}
            try:
                with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120,
                                  headers={"Authorization": f"Bearer {KEY}"}) as r:
                    if r.status_code != 200:
                        problems.append(f"status {r.status_code}: {r.read()[:200]!r}")
                        continue
                    lines = []
                    for line in r.iter_lines():
                        lines.append(line)
                        if drop and len(lines) > 4:
                            break
                    if drop:
                        dropped[0] += 1
                        continue
                datas = [x[6:] for x in lines if x.startswith("data: ")]
                if datas[-1] != "[DONE]":
                    problems.append(f"no [DONE]: {lines[-3:]}")
                    continue
                chunks = [json.loads(d) for d in datas[:-1]]
                if not chunks[-1]["choices"][0]["finish_reason"] or len({c["id"] for c in chunks}) != 1:
                    problems.append(f"malformed: {chunks[-1]}")
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - counted as lost
                problems.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert problems == []
    assert done[0] > 24 and dropped[0] > 0
    wait_idle(url)


# ---- the command line ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_cli_serve_help_and_missing_extra():
    r = subprocess.run([sys.executable, "-m", "fastlm", "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--api-key" in r.stdout and "--slots" in r.stdout
    block = "import sys; sys.modules['fastapi'] = None; from fastlm.cli import main; sys.exit(main(['serve']))"
    r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and 'pip install "fastlm[server]"' in r.stderr and "Traceback" not in r.stderr


def test_cli_serve_warns_on_an_open_host_without_a_key(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastlm", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
                        "-m", str(tmp_path / "missing.gguf")], capture_output=True, text=True, timeout=60)
    assert "warning" in r.stderr and "--api-key" in r.stderr
    assert r.returncode != 0 and "missing.gguf" in r.stderr and "Traceback" not in r.stderr  # the load failed


def test_cli_serve_end_to_end():
    port = free_port()
    env = dict(os.environ, FASTLM_API_KEY="k2")
    p = subprocess.Popen([sys.executable, "-m", "fastlm", "serve", "--port", str(port), "--ctx", "512",
                          "--slots", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.monotonic()
        while True:
            assert p.poll() is None, p.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - t0 < 120
            time.sleep(0.1)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k2", max_retries=0)
        assert c.models.list().data[0].id == DEFAULT_MODEL
        r = c.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=12, temperature=0)
        assert "Paris" in r.choices[0].message.content
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert "ready" in err and "4 slots" in err


# ---- the chat page ----

def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(chromium() is None, reason="needs Chromium and chromedriver (Debian: chromium chromium-driver)")
def test_chat_page_in_headless_chromium(engine):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver = chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    want = engine.chat(QUESTION, max_tokens=64).text
    with Server(create_app(engine, model_name=NAME)) as u:
        d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts)
        try:
            d.get(u + "/")
            WebDriverWait(d, 30).until(lambda d: "context" in d.find_element(By.ID, "model").text)
            d.execute_script("document.getElementById('temp').value = '0'; document.getElementById('max').value = '64'")
            box = d.find_element(By.ID, "input")
            box.send_keys(QUESTION[0]["content"])
            d.find_element(By.ID, "send").click()
            WebDriverWait(d, 60).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state=done]"))
            answer = d.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text
            assert answer.strip() == want.strip() and "Paris" in answer
        finally:
            d.quit()


# ---- structured output over HTTP ----
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
ASK_PERSON = [{"role": "user", "content": "Give me a person as JSON."}]


def test_response_format_json_schema_and_json_object(client):
    pytest.importorskip("llguidance")
    jsonschema = pytest.importorskip("jsonschema")
    r = client.chat.completions.create(model=NAME, messages=ASK_PERSON, max_tokens=80, temperature=0.8, seed=2,
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "The capital of France as "
                                       "a JSON object."}], max_tokens=120, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    streamed = client.chat.completions.create(model=NAME, messages=ASK_PERSON, max_tokens=80, stream=True,
                                              response_format={"type": "json_schema", "json_schema": {
                                                  "name": "person", "schema": PERSON}})
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    jsonschema.validate(json.loads(text), PERSON)
    r = client.completions.create(model=NAME, prompt="Digits:", max_tokens=10,
                                  extra_body={"structured_outputs": {"regex": "[0-9]{4}"}})
    assert len(r.choices[0].text) == 4 and r.choices[0].text.isdigit()


def test_parse_with_a_pydantic_model(client):
    pytest.importorskip("llguidance")
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        age: int = pydantic.Field(ge=0, le=120)

    r = client.chat.completions.parse(model=NAME, messages=ASK_PERSON, response_format=Person, max_tokens=80)
    p = r.choices[0].message.parsed
    assert isinstance(p, Person) and 0 <= p.age <= 120


def test_bad_structured_requests_are_400_naming_the_field(client):
    pytest.importorskip("llguidance")
    cases = [({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                  "type": "array", "uniqueItems": True}}}}, "response_format", "uniqueItems"),
             ({"response_format": {"type": "xml"}}, "response_format", "xml"),
             ({"response_format": {"type": "json_schema"}}, "response_format", "schema"),
             ({"structured_outputs": {"regex": "a{3"}}, "structured_outputs", "unclosed"),
             ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one"),
             ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
              "structured_outputs", "not both")]
    for body, param, words in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=NAME, messages=ASK_PERSON, max_tokens=5, extra_body=body)
        err = error_of(e)
        assert err["param"] == param and words in err["message"], (body, err)


# ---- tool calls over HTTP ----
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string", "maxLength": 30}},
                                                 "required": ["city"], "additionalProperties": False}}}]
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]


def test_tool_calls_whole_and_streamed(client):
    pytest.importorskip("llguidance")
    r = client.chat.completions.create(model=NAME, messages=ASK_WEATHER, tools=WEATHER, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=100, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    call = ch.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    stream = client.chat.completions.create(model=NAME, messages=ASK_WEATHER, tools=WEATHER, stream=True,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                            parallel_tool_calls=False, max_tokens=100, temperature=0)
    names, ids, args, reasons = [], [], [], []
    for chunk in stream:
        for c in chunk.choices:
            reasons.append(c.finish_reason)
            for d in c.delta.tool_calls or []:
                assert d.index == 0
                if d.id is not None:
                    ids.append(d.id)
                if d.function.name is not None:
                    names.append(d.function.name)
                assert d.function.arguments is not None  # never None: "" then pieces
                args.append(d.function.arguments)
    assert names == ["get_weather"] and len(ids) == 1  # the name once
    assert reasons[-1] == "tool_calls"
    assert json.loads("".join(args)) == json.loads(call.function.arguments)  # the pieces join to the same JSON


def test_a_tool_result_goes_back(client):
    msgs = ASK_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]
    r = client.chat.completions.create(model=NAME, messages=msgs, tools=WEATHER, max_tokens=20)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    for body, param in [({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
                        ({"tool_choice": "required"}, "tool_choice"),  # no tools
                        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=NAME, messages=ASK_WEATHER, max_tokens=5, extra_body=body)
        assert error_of(e)["param"] == param, error_of(e)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, max_tokens=5, messages=[{"role": "tool", "content": "x"}])
    assert "tool_call_id" in error_of(e)["message"]
