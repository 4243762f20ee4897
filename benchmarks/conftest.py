"""Kernel benchmarks: fastlm and torch side by side, one pytest-benchmark group per kernel/shape.

    pip install ".[bench]"
    pytest benchmarks --benchmark-json=bench.json && python benchmarks/report.py bench.json

torch runs with as many threads as fastlm (physical cores unless FASTLM_NUM_THREADS says).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastlm  # noqa: E402

torch.set_num_threads(fastlm.get_num_threads())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def record(benchmark, impl: str, work: float | None = None, unit: str | None = None):
    """Tags a benchmark with its implementation and the work per call (FLOP or bytes)."""
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["isa"] = fastlm.get_isa()
    benchmark.extra_info["threads"] = fastlm.get_num_threads()
    if work is not None:
        benchmark.extra_info["work"] = work
        benchmark.extra_info["unit"] = unit


def interleaved(calls: dict, rounds: int = 9, block_s: float = 0.05) -> dict:
    """Median seconds per call of each implementation, measured in alternating blocks (each impl
    runs ~block_s, then the next, for `rounds` rounds): the machine's noise then hits all of them
    alike, so their ratio is taken in one run even when a burst slows one block."""
    import time

    import numpy as np

    per_call = {}
    for name, fn in calls.items():  # warm-up, and how many calls fill a block
        fn()
        t = time.perf_counter()
        fn()
        per_call[name] = max(1, int(block_s / max(time.perf_counter() - t, 1e-7)))
    samples = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(reversed(list(calls)))
        for name in order:
            n = per_call[name]
            t = time.perf_counter()
            for _ in range(n):
                calls[name]()
            samples[name].append((time.perf_counter() - t) / n)
    return {name: float(np.median(s)) for name, s in samples.items()}
