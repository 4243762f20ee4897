"""Loading without holding a model twice: tensors the executor copies leave resident memory as they
are copied, float32 conversions for quantizing go a few MB at a time, and a large float head is
packed piece by piece, with the same results as loading it whole."""
from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from fastlm import Engine, _C, kernels
from fastlm.formats import open_model
from fastlm.models import build
from fastlm.quant import QuantScheme
from tiny_models import save


@pytest.fixture(scope="module")
def wide_vocab(tmp_path_factory):
    """A tied Llama with a 20,000-token vocabulary (the float head goes in three pieces of 8192
    rows) and a 2 MB untied-size embedding: enough pages to see them leave."""
    torch.manual_seed(21)
    cfg = transformers.LlamaConfig(vocab_size=20000, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return save(transformers.LlamaForCausalLM(cfg).eval(), tmp_path_factory.mktemp("wide_vocab"))


def resident_kb(path) -> int:
    """KB of `path`'s file mappings resident in this process (Linux smaps)."""
    total, mine, real = 0, False, os.path.realpath(path)
    with open("/proc/self/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                mine = line.rstrip().endswith(real)
            elif mine and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_tied_head_packed_in_pieces_gives_the_logits_of_transformers(wide_vocab, dtype):
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(wide_vocab), dtype=torch.float32).eval()
    ids = [1, 8191, 8192, 16383, 16384, 19999, 7, 12345]  # embedding rows on both sides of each piece
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    eng = Engine.from_pretrained(wide_vocab, dtype=dtype)
    got = eng.slots.logits(ids)
    tol = 1e-4 if dtype == "float32" else 3e-2  # bf16: the weights rounded, as loading them whole does
    np.testing.assert_allclose(got, want, atol=tol, rtol=tol)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_copied_tensors_leave_resident_memory(wide_vocab, dtype):
    path = wide_vocab / "model.safetensors"
    src = open_model(wide_vocab)  # the store (and its file mapping) outlives the build, as during a load
    model, _ = build(src.config, src.store, dtype)
    # every tensor was read whole and copied or quantized into the executor: what stays resident
    # is at most the pages at tensor edges (each shared with a neighbour); before, all 2.6 MB
    assert path.stat().st_size > 2_000_000 and resident_kb(path) < 128
    src.store.get("model.norm.weight").sum()  # the mapping still reads back
    assert not model.missing()


def test_quantizing_in_pieces_equals_quantizing_whole():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1500, 4096)).astype(np.float32).astype(ml_dtypes.bfloat16)  # pieces of 512 rows
    seen = []
    for qtype in ("q8", "q4"):
        got = QuantScheme("int8" if qtype == "q8" else "int4").quantize("w", w, qtype, 32,
                                                                        lambda a, b: seen.append((a, b)))
        np.testing.assert_array_equal(got, kernels.q_quantize(w.astype(np.float32), qtype, 32))
    assert seen[:3] == [(0, 512), (512, 1024), (1024, 1500)]
    w[1400, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        QuantScheme("int8").quantize("w", w, "q8", 32)


def test_lm_head_rows_are_checked():
    spec = {"n_layers": 1, "hidden": 16, "n_heads": 2, "n_kv_heads": 2, "head_dim": 8, "ffn": 16, "vocab": 100,
            "max_seq": 8, "norm": "rms", "norm_eps": 1e-5, "mlp": "swiglu", "pos": "learned"}
    m = _C.Model(spec)
    rows = np.zeros((64, 16), np.float32)
    with pytest.raises(ValueError, match="in order from row 0"):
        m.set_lm_head_rows(rows[:16], 64)
    with pytest.raises(ValueError, match="must start at a multiple"):
        m.set_lm_head_rows(rows[:3], 0)
    with pytest.raises(ValueError, match="columns"):
        m.set_lm_head_rows(np.zeros((64, 15), np.float32), 0)
    m.set_lm_head_rows(rows, 0)
    with pytest.raises(ValueError, match="one dtype"):
        m.set_lm_head_rows(rows[:36].astype(ml_dtypes.bfloat16), 64)
    m.set_lm_head_rows(rows[:36], 64)
    assert "lm_head" not in m.missing()
    with pytest.raises(ValueError, match="tie_embedding needs a float lm_head"):
        _C.Model(spec).tie_embedding()
