"""Concurrent streams on one Engine (continuous batching, in process): aggregate tokens/s of N
streams against one stream's, and time to first token of a request admitted while N - 1 others
stream, against its time alone. Rounds interleave the dtypes; medians are printed.

    python benchmarks/streams.py --dtypes int8 float32 --streams 16 --tokens 64 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

from fastlm import Engine


def together(n: int, work) -> float:
    """work(0) ... work(n - 1) in n threads released at once: the seconds until all are done."""
    start = threading.Barrier(n + 1)

    def worker(i: int) -> None:
        start.wait()
        work(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def run_streams(eng: Engine, n: int, tokens: int) -> tuple[float, list[float]]:
    """n streams started together: (aggregate generated tokens/s, each one's time to first token)."""
    ttft, counts = [0.0] * n, [0] * n

    def work(i: int) -> None:
        t0 = time.perf_counter()
        for k, _ in enumerate(eng.stream(f"Request {i}: write a story about a dragon.", max_tokens=tokens,
                                         ignore_eos=True)):
            if k == 0:
                ttft[i] = time.perf_counter() - t0
            counts[i] += 1

    seconds = together(n, work)  # (before counts is read: the threads fill it)
    return sum(counts) / seconds, ttft


def late_ttft(eng: Engine, others: int, tokens: int) -> float:
    """Time to first token of one request admitted while `others` streams decode."""
    go = threading.Event()
    streams = [eng.stream(f"Background {i}: tell a long tale.", max_tokens=tokens * 4, ignore_eos=True)
               for i in range(others)]
    for s in streams:
        next(s)
    threads = [threading.Thread(target=lambda s=s: [None for _ in s]) for s in streams]
    for t in threads:
        t.start()
    go.set()
    time.sleep(0.05)
    t0 = time.perf_counter()
    next(iter(eng.stream("The late one: what is the capital of France?", max_tokens=1)))
    dt = time.perf_counter() - t0
    for s in streams:
        s.close()
    for t in threads:
        t.join()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtypes", nargs="+", default=["int8", "float32"])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    engines = {d: Engine.from_pretrained(a.model, dtype=d, max_seq_len=1024, max_slots=a.streams, prefix_cache=False)
               for d in a.dtypes}
    rows: dict[str, dict[str, list[float]]] = {d: {} for d in a.dtypes}
    for _ in range(a.rounds):
        for d, eng in engines.items():
            r = rows[d]
            one, _ = run_streams(eng, 1, a.tokens)
            many, ttfts = run_streams(eng, a.streams, a.tokens)
            alone = late_ttft(eng, 0, a.tokens)
            busy = late_ttft(eng, a.streams - 1, a.tokens)
            for k, v in (("one", one), ("many", many), ("ttft_p50", statistics.median(ttfts)),
                         ("ttft_p95", sorted(ttfts)[int(0.95 * (len(ttfts) - 1))]), ("alone", alone), ("busy", busy)):
                r.setdefault(k, []).append(v)
    print(f"| dtype | 1 stream tok/s | {a.streams} streams tok/s | ratio | TTFT p50 / p95 ({a.streams} at once) "
          f"| late TTFT alone | beside {a.streams - 1} | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for d, r in rows.items():
        m = {k: statistics.median(v) for k, v in r.items()}
        print(f"| {d} | {m['one']:.1f} | {m['many']:.1f} | {m['many'] / m['one']:.2f}x | "
              f"{m['ttft_p50'] * 1e3:.0f} / {m['ttft_p95'] * 1e3:.0f} ms | {m['alone'] * 1e3:.0f} ms | "
              f"{m['busy'] * 1e3:.0f} ms | {m['busy'] / m['alone']:.2f}x |")


if __name__ == "__main__":
    main()
