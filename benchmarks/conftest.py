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
