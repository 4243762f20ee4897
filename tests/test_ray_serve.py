"""The OpenAI server on Ray Serve (fastlm.server.ray_serve), on loopback with ray.init(num_cpus=2):
two replicas of the real SmolLM2, one core each, behind the prefix-hash router, driven by the
official openai client."""
from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")

from fastlm import Engine, SamplingParams  # noqa: E402
from fastlm.hub import DEFAULT_MODEL  # noqa: E402

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def url():
    from fastlm.server.ray_serve import application

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(replicas=2, cores_per_replica=1, max_seq_len=1024), route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def local():
    return Engine.from_pretrained(DEFAULT_MODEL, max_seq_len=1024)


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def test_completions_run_on_the_replica_their_prompt_hashes_to(url, local):
    from fastlm.server.ray_serve import pick

    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,",
               "The capital of France is"]  # the last repeats the first: same replica
    seen = []
    for p in prompts:
        raw = client(url).completions.with_raw_response.create(model=MODEL, prompt=p, max_tokens=12, temperature=0)
        got = raw.parse().choices[0].text
        assert got == local.generate(p, SamplingParams(max_tokens=12, temperature=0)).text
        replica = int(raw.headers["x-fastlm-replica"])
        assert replica == pick("/v1/completions", json.dumps({"prompt": p}).encode(), 2)
        seen.append(replica)
    assert seen[0] == seen[-1]
    assert set(seen) == {0, 1}  # these prompts happen to hash to both replicas


def test_chat_streams_through_the_router(url, local):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
    whole = client(url).chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    chunks = list(client(url).chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0,
                                                      stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert text == local.chat(messages, SamplingParams(max_tokens=16, temperature=0)).text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_errors_keep_their_status_and_shape(url):
    with pytest.raises(openai.BadRequestError) as e:
        client(url).completions.create(model=MODEL, prompt="hi", max_tokens=-1)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url + "/health").status_code == 200


def busy_slots(url, replica: int) -> int:
    text = httpx.get(url + "/metrics", headers={"x-fastlm-replica": str(replica)}).text
    return int(float(re.search(r"^fastlm_busy_slots (\S+)$", text, re.M).group(1)))


def test_a_client_that_leaves_mid_stream_frees_the_replica(url):
    body = {"model": MODEL, "prompt": "Write a long story about a dragon.", "max_tokens": 400, "stream": True,
            "temperature": 0.8, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"x-fastlm-replica": "1"}) as r:
        assert r.headers["x-fastlm-replica"] == "1"
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        assert busy_slots(url, 1) == 1
    deadline = time.time() + 20
    while busy_slots(url, 1) and time.time() < deadline:
        time.sleep(0.2)
    assert busy_slots(url, 1) == 0
