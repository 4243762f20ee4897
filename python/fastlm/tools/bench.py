"""``fastlm bench``: prefill (ppN) and decode (tgN) tokens/s, as llama-bench reports them, with the
weight bandwidth a decode rate implies (tokens/s x bytes read per token)."""
from __future__ import annotations

import statistics
import time

import numpy as np

from fastlm import _C
from fastlm.engine import Engine
from fastlm.progress import reporter


def bench(engine: Engine, n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
          profile: bool = False, progress: bool = False) -> list[dict]:
    """Rows of tokens/s (mean, std and each repetition, after one warm-up) for a prefill of
    n_prompt random tokens and a greedy decode of n_gen tokens after one; with profile, the
    seconds each kind of op took; with progress, a bar per test on stderr (when it is a terminal)."""
    with engine.hold() as slots:
        return _bench(engine, slots, n_prompt, n_gen, repetitions, profile, progress)


def _bench(engine: Engine, slots, n_prompt: int, n_gen: int, repetitions: int, profile: bool,
           progress: bool) -> list[dict]:
    m = engine.model
    slots.ensure(1)
    rng = np.random.default_rng(0)
    vocab = engine.vocab_size
    rows: list[dict] = []

    def run(test: str, fn) -> None:
        report = reporter(f"bench {test}", "run") if progress else None
        rates = []
        for i in range(repetitions + 1):  # a warm-up, then the repetitions
            rate = fn()
            if i:
                rates.append(rate)
            if report:
                report(i + 1, repetitions + 1)
        mean, std = statistics.mean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0
        row = {"model": engine.source, "dtype": engine.info["dtype"], "isa": m.isa, "threads": _C.get_num_threads(),
               "test": test, "tokens_per_s": mean, "std": std, "samples": rates}
        if test.startswith("tg"):
            row["weight_bytes"] = m.weight_bytes
            row["GB_per_s"] = m.weight_bytes * mean / 1e9
        rows.append(row)

    def prefill() -> float:
        toks = rng.integers(0, vocab, size=n_prompt).tolist()
        slots.truncate(0, 0)
        t = time.perf_counter()
        slots.prefill(0, toks)
        return n_prompt / (time.perf_counter() - t)

    def decode() -> float:
        slots.prefill(0, [1])
        tok = int(rng.integers(0, vocab))
        t = time.perf_counter()
        for _ in range(n_gen):
            tok = int(np.argmax(slots.decode([0], [tok])[0]))
        return n_gen / (time.perf_counter() - t)

    m.set_profiling(profile)
    try:
        if n_prompt > 0:
            m.reset_profile()
            run(f"pp{n_prompt}", prefill)
            if profile:  # without it the executor timed nothing: no all-zero profile
                rows[-1]["profile_s"] = dict(m.profile())
        if n_gen > 0:
            m.reset_profile()
            run(f"tg{n_gen}", decode)
            if profile:
                rows[-1]["profile_s"] = dict(m.profile())
    finally:
        m.set_profiling(False)
        slots.truncate(0, 0)
    return rows
