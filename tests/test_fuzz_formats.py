"""Seeded, bounded fuzzing of the file readers (seconds in CI): mutated safetensors and GGUF files
either load or raise the format's own ValueError subclass naming the file, never another type,
a crash or a hang. benchmarks/fuzz_formats.py runs the same cases for as long as asked."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastlm.config import ConfigError
from fastlm.formats import GGUFError, SafetensorsError, open_model
from fastlm.formats.gguf import GGUFFile
from fastlm.formats.safetensors import SafetensorsFile

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def mutate(raw: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(raw)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut]) if cut is not None else bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)
CUTS = st.one_of(st.none(), st.integers(0, 4096))


@pytest.fixture(scope="module")
def safetensors_raw():
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)}
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for n, a in tensors.items():
        header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(a.tobytes() for a in tensors.values())


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_mutated_safetensors_load_or_raise_safetensors_error(tmp_path, safetensors_raw, edits, cut):
    p = tmp_path / "m.safetensors"
    p.write_bytes(mutate(safetensors_raw, edits, cut))
    try:
        f = SafetensorsFile(p)
        for name in f.entries:
            f.get(name)
    except SafetensorsError as e:
        assert str(p) in str(e)


_GGUF: list[bytes] = []  # built once; not a fixture, so a failing example does not print it


@pytest.fixture(scope="module")
def gguf_built(tmp_path_factory):
    from tiny_gguf import build

    _GGUF[:] = [build(tmp_path_factory.mktemp("fz")).read_bytes()]


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6), cut=CUTS)
def test_mutated_gguf_headers_load_or_raise_gguf_error(tmp_path, gguf_built, edits, cut):
    gguf_raw = _GGUF[0]
    p = tmp_path / "m.gguf"
    head = 1 << 16  # the metadata and tensor directory sit in the first 64 KiB of this file
    p.write_bytes(mutate(gguf_raw[:head], edits, cut) + (gguf_raw[head:] if cut is None else b""))
    try:
        f = GGUFFile(p)
        open_model(p)  # the config and tokenizer from the metadata, too
        assert f.tensors
    except (GGUFError, ConfigError) as e:
        assert str(p) in str(e) or isinstance(e, ConfigError)
