"""fastlm serve under load, through the official openai client on loopback: streams runs
`fastlm serve` in a process of its own (--in-process: the app in this one, uvicorn in a thread),
soak runs it in this process (its RSS is then the server's and the clients' together).

streams: aggregate tokens/s of N concurrent streams against one stream's, their time to first
token (p50 / p95), and the time to first token of a request admitted while N - 1 others stream
against its time alone (p95 over several late requests). Rounds interleave the dtypes; medians
of the rounds are printed, with the decode roofline (bandwidth / weight bytes per token).

soak: C clients for S seconds, a fifth of each one's requests dropped mid-stream: lost or
malformed responses (a status other than 200, a stream without [DONE] or finish_reason, an
exception), busy slots after the load (/metrics), the scheduler steps between a cancel and its
slots being free, and this process's RSS (server and clients: the clients are threads here too) every 10 s.

    python benchmarks/serve.py streams --dtypes int8 float32 --streams 16 --tokens 64 --rounds 3
    python benchmarks/serve.py soak --clients 64 --seconds 120
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import openai

from fastlm import Engine
from fastlm.cli import info_dict
from fastlm.server import Server, create_app
from streams import together  # benchmarks/streams.py: threads released at once

NAME = "bench"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def metrics(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def stream_one(client: openai.OpenAI, prompt: str, tokens: int) -> tuple[float, int]:
    """(time to first token, tokens generated) of one streamed completion."""
    t0 = time.perf_counter()
    ttft, n = None, 0
    for c in client.completions.create(model=NAME, prompt=prompt, max_tokens=tokens, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
        if ttft is None and c.choices:
            ttft = time.perf_counter() - t0
        if c.usage is not None:
            n = c.usage.completion_tokens
    return ttft, n


def run_streams(client: openai.OpenAI, n: int, tokens: int) -> tuple[float, list[float]]:
    """n streams started together: (aggregate tokens/s, each one's time to first token)."""
    ttft, counts = [0.0] * n, [0] * n

    def work(i: int) -> None:
        ttft[i], counts[i] = stream_one(client, f"Request {i}: write a story about a dragon.", tokens)

    seconds = together(n, work)  # (before counts is read: the threads fill it)
    return sum(counts) / seconds, ttft


def late_ttfts(client: openai.OpenAI, others: int, tokens: int, repeats: int) -> list[float]:
    """Times to first token of `repeats` requests, one after another, each admitted while
    `others` streams decode (they run long enough to cover them all)."""
    running = threading.Event()
    left = [others]
    lock = threading.Lock()

    def background(i: int) -> None:
        stream = client.completions.create(model=NAME, prompt=f"Background {i}: tell a long tale.",
                                           max_tokens=tokens * 8, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
        for k, _ in enumerate(stream):
            if k == 1:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        running.set()
            if done.is_set():
                stream.close()
                return

    done = threading.Event()
    threads = [threading.Thread(target=background, args=(i,)) for i in range(others)]
    for t in threads:
        t.start()
    if others:
        running.wait(120)
    out = []
    for r in range(repeats):
        t0 = time.perf_counter()
        next(iter(client.completions.create(model=NAME, prompt=f"The late one ({r}): what is the capital of France?",
                                            max_tokens=1, temperature=0, stream=True)))
        out.append(time.perf_counter() - t0)
    done.set()
    for t in threads:
        t.join()
    return out


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


class ChildServer:
    """`fastlm serve` in a process of its own (the clients' threads then share no GIL with it)."""

    def __init__(self, model: str, dtype: str, slots: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "fastlm", "serve", "-m", model, "--dtype", dtype,
                                      "--port", str(port), "--slots", str(slots), "--ctx", "1024",
                                      "--served-model-name", NAME, "--log-level", "warning"])
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastlm serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > 300:
                raise RuntimeError("fastlm serve did not become ready in 300 s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def cmd_streams(a) -> None:
    servers, clients, weight_bytes = [], {}, {}
    for d in a.dtypes:
        if a.in_process:
            srv = Server(create_app(Engine.from_pretrained(a.model, dtype=d, max_seq_len=1024, max_slots=a.streams),
                                    model_name=NAME))
            url = srv.start()
        else:
            srv = ChildServer(a.model, d, a.streams)
            url = srv.url
        servers.append(srv)
        clients[d] = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=300)
        weight_bytes[d] = httpx.get(url + f"/v1/models/{NAME}", timeout=30).json()["weight_bytes"]
        stream_one(clients[d], "warm up", 8)
    rows: dict[str, dict[str, list[float]]] = {d: {} for d in a.dtypes}
    try:
        for _ in range(a.rounds):
            for d, client in clients.items():
                r = rows[d]
                one, _ = run_streams(client, 1, a.tokens)
                many, ttfts = run_streams(client, a.streams, a.tokens)
                alone = late_ttfts(client, 0, a.tokens, a.late)
                busy = late_ttfts(client, a.streams - 1, a.tokens, a.late)
                for k, v in (("one", one), ("many", many), ("ttft_p50", statistics.median(ttfts)),
                             ("ttft_p95", p95(ttfts)), ("alone_p50", statistics.median(alone)),
                             ("alone_p95", p95(alone)), ("busy_p50", statistics.median(busy)),
                             ("busy_p95", p95(busy))):
                    r.setdefault(k, []).append(v)
    finally:
        for s in servers:
            s.stop()
    c = info_dict()["cpu"]
    print(f"CPU: {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores; {a.rounds} rounds, "
          f"{a.tokens} tokens per stream, {a.late} late requests per round; medians over rounds; server "
          + ("in this process" if a.in_process else "in its own process (fastlm serve)"))
    print(f"| dtype | weights MB | roofline 1 stream at {a.bandwidth:g} GB/s | 1 stream tok/s | {a.streams} streams "
          f"tok/s | ratio | TTFT p50 / p95 ({a.streams} at once) | late TTFT p50 / p95 alone | beside "
          f"{a.streams - 1} | p95 ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d, r in rows.items():
        m = {k: statistics.median(v) for k, v in r.items()}
        wb = weight_bytes[d]
        print(f"| {d} | {wb / 1e6:.0f} | {a.bandwidth * 1e9 / wb:.0f} tok/s | {m['one']:.1f} | {m['many']:.1f} | "
              f"{m['many'] / m['one']:.2f}x | {m['ttft_p50'] * 1e3:.0f} / {m['ttft_p95'] * 1e3:.0f} ms | "
              f"{m['alone_p50'] * 1e3:.0f} / {m['alone_p95'] * 1e3:.0f} ms | "
              f"{m['busy_p50'] * 1e3:.0f} / {m['busy_p95'] * 1e3:.0f} ms | {m['busy_p95'] / m['alone_p95']:.2f}x |")


def cmd_soak(a) -> None:
    eng = Engine.from_pretrained(a.model, dtype=a.dtype, max_seq_len=1024, max_slots=a.slots,
                                 max_queue=max(256, a.clients))
    srv = Server(create_app(eng, model_name=NAME))
    url = srv.start()
    stop_at = time.monotonic() + a.seconds
    lock = threading.Lock()
    tally = {"done": 0, "dropped": 0, "lost": 0, "malformed": 0, "tokens": 0}
    problems: list[str] = []
    rss = [("start", rss_mb())]

    def note(kind: str, what: str = "") -> None:
        with lock:
            tally[kind] += 1
            if what and len(problems) < 20:
                problems.append(f"{kind}: {what}")

    def client_loop(k: int) -> None:
        rng = random.Random(k)
        http = httpx.Client(timeout=300)
        while time.monotonic() < stop_at:
            drop = rng.random() < 0.2
            chat = rng.random() < 0.5
            body = {"model": NAME, "max_tokens": rng.randint(8, 64), "temperature": 0.8, "seed": rng.randint(0, 99),
                    "stream": True, "stream_options": {"include_usage": True}}
            if chat:
                body["messages"] = [{"role": "user", "content": f"Client {k}: tell me about the number {rng.randint(0, 999)}."}]
            else:
                body["prompt"] = f"Client {k}, story {rng.randint(0, 999)}: once upon a time"
            path = "/v1/chat/completions" if chat else "/v1/completions"
            try:
                with http.stream("POST", url + path, json=body) as r:
                    if r.status_code != 200:
                        note("lost", f"status {r.status_code} {r.read()[:200]!r}")
                        continue
                    datas = []
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            datas.append(line[6:])
                        if drop and len(datas) >= rng.randint(2, 8):
                            break
                if drop:
                    note("dropped")
                    continue
                if not datas or datas[-1] != "[DONE]":
                    note("malformed", f"no [DONE]: {datas[-2:]}")
                    continue
                chunks = [json.loads(x) for x in datas[:-1]]
                body_chunks = [c for c in chunks if c["choices"]]
                if (len({c["id"] for c in chunks}) != 1 or not body_chunks
                        or not body_chunks[-1]["choices"][0]["finish_reason"] or chunks[-1]["choices"]
                        or chunks[-1]["usage"]["completion_tokens"] < 1):
                    note("malformed", json.dumps(chunks[-1])[:200])
                    continue
                with lock:
                    tally["done"] += 1
                    tally["tokens"] += chunks[-1]["usage"]["completion_tokens"]
            except Exception as e:  # noqa: BLE001 - counted as lost, named in the report
                note("lost", f"{type(e).__name__}: {e}")
        http.close()

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(a.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # RSS every 10 s while the clients run
        for t in threads:
            t.join(max(0.0, t0 + 10 * len(rss) - time.monotonic()))
            if time.monotonic() >= t0 + 10 * len(rss):
                break
        if time.monotonic() >= t0 + 10 * len(rss):
            rss.append((f"{time.monotonic() - t0:.0f}s", rss_mb()))
    elapsed = time.monotonic() - t0
    idle_by = time.monotonic()
    while True:
        m = metrics(url)
        if m["fastlm_busy_slots"] == 0 and m["fastlm_queue_depth"] == 0 or time.monotonic() - idle_by > 30:
            break
        time.sleep(0.05)
    rss.append(("end", rss_mb()))
    srv.stop()
    steps = list(eng.scheduler.stats.cancel_steps)
    c = info_dict()["cpu"]
    print(f"CPU: {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores; dtype {a.dtype}, "
          f"{a.slots} slots, {a.clients} clients for {elapsed:.0f} s, a fifth of requests dropped mid-stream")
    print(f"responses whole: {tally['done']}, dropped on purpose: {tally['dropped']}, lost: {tally['lost']}, "
          f"malformed: {tally['malformed']}; {tally['tokens'] / elapsed:.1f} tok/s in whole responses")
    print(f"after the load: busy slots {m['fastlm_busy_slots']:g}, queue {m['fastlm_queue_depth']:g}; "
          f"requests {m['fastlm_requests_total']:g}, cancelled {m['fastlm_requests_cancelled_total']:g}, "
          f"failed {m['fastlm_requests_failed_total']:g}")
    if steps:
        print(f"cancel -> slots free: {len(steps)} cancels, steps begun in between: max {max(steps)}, "
              f"histogram {dict(sorted(collections.Counter(steps).items()))}")
    print("RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss))
    for p in problems:
        print("  " + p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    sub = ap.add_subparsers(required=True)
    s = sub.add_parser("streams")
    s.add_argument("--dtypes", nargs="+", default=["int8", "float32"])
    s.add_argument("--streams", type=int, default=16)
    s.add_argument("--tokens", type=int, default=64)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--late", type=int, default=8, help="late requests per round (for their p95)")
    s.add_argument("--bandwidth", type=float, default=20.0, help="GB/s, for the roofline column")
    s.add_argument("--in-process", action="store_true", help="the server in this process, beside the clients")
    s.set_defaults(func=cmd_streams)
    k = sub.add_parser("soak")
    k.add_argument("--dtype", default="auto")
    k.add_argument("--slots", type=int, default=16)
    k.add_argument("--clients", type=int, default=64)
    k.add_argument("--seconds", type=float, default=120)
    k.set_defaults(func=cmd_soak)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
