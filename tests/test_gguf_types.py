"""Every GGUF block type fastlm reads, in its own bits: dequantization bit for bit equal to the
`gguf` package's (an independent implementation), the decode dot products of every ISA against
the scalar reference, and tiny models written in each type (and a Q4_K_M-like mix) against
transformers loading the same file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import assert_close
from fastlm import Engine, cli
from fastlm import kernels as K
from fastlm.formats.gguf import GGML_TYPES, NATIVE_BLOCK_TYPES, GGUFError, dequantize
from tiny_gguf import F16_FIELDS, build, patch_tensor_info, random_blocks

gguf = pytest.importorskip("gguf")

ALL_QUANTIZED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0") + tuple(t for t in NATIVE_BLOCK_TYPES if t not in ("Q5_0", "Q5_1"))


def block_size(type_name: str) -> int:
    return next(b for n, b, _ in GGML_TYPES.values() if n == type_name)


def blocks_with_specials(type_name: str, N: int, K_: int, seed: int = 0) -> np.ndarray:
    """Random blocks whose fp16 fields include zeros, subnormals, negatives and large values."""
    rng = np.random.default_rng(seed)
    raw = random_blocks(type_name, (N, K_), rng).reshape(N, K_ // block_size(type_name), -1)
    specials = np.array([0.0, 6e-8, -3e-5, 1e-3, -0.5, 2.0, 300.0, -60000.0], dtype="<f2").view(np.uint8).reshape(-1, 2)
    for off in F16_FIELDS[type_name]:
        pick = rng.integers(0, len(specials), size=raw.shape[:2])
        mask = rng.random(raw.shape[:2]) < 0.3
        raw[:, :, off:off + 2][mask] = specials[pick][mask]
    return raw.reshape(N, -1)


@pytest.mark.parametrize("type_name", ALL_QUANTIZED + ("F16", "BF16"))
def test_dequantize_bit_exact_with_gguf(isa, type_name):
    qt = getattr(gguf.GGMLQuantizationType, type_name)
    shape = (5, 512)
    if type_name in ("F16", "BF16"):
        a = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        raw = gguf.quants.quantize(a, qt) if type_name == "BF16" else a.astype(np.float16).view(np.uint8)
    else:
        raw = blocks_with_specials(type_name, *shape)
    want = gguf.quants.dequantize(raw, qt).reshape(shape)
    got = dequantize(np.ascontiguousarray(raw).reshape(-1), int(qt), shape)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    if type_name in NATIVE_BLOCK_TYPES:  # the kernel directly, and its reference
        kname = type_name.lower()
        np.testing.assert_array_equal(K.q_dequantize(raw, kname, shape[1], 0).view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(K.ref.q_dequantize(raw, kname, shape[1], 0).view(np.uint32),
                                      want.view(np.uint32))


@pytest.mark.parametrize("type_name", NATIVE_BLOCK_TYPES)
def test_dequantize_whole_tensor_bit_exact(type_name):
    """A tensor of many rows, through the file reader."""
    qt = getattr(gguf.GGMLQuantizationType, type_name)
    raw = blocks_with_specials(type_name, 300, 1024, seed=3)
    want = gguf.quants.dequantize(raw, qt)
    got = dequantize(raw.reshape(-1), int(qt), (300, 1024))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("type_name", NATIVE_BLOCK_TYPES)
@pytest.mark.parametrize("M,K_,N", [(1, 256, 1), (1, 512, 67), (3, 768, 5), (16, 256, 33), (17, 512, 9),
                                    (40, 256, 17), (2, 2048, 19)])
def test_q_matmul_against_reference(isa, rng, type_name, M, K_, N):
    if block_size(type_name) == 32 and K_ == 512:
        K_ = 576  # 32-blocks: a row that is not a multiple of 256 (SmolLM2's width)
    raw = random_blocks(type_name, (N, K_), rng, 0.05)
    kname = type_name.lower()
    x = rng.standard_normal((M, K_)).astype(np.float32)
    x[:, 0] *= 40  # an outlier channel, as real activations have
    b = rng.standard_normal(N).astype(np.float32)
    y = K.q_matmul(x, raw, kname, 0, bias=b)
    wd = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, type_name))
    if M <= 16:  # decode: int8 activations in blocks of 32, as the reference quantizes them
        assert_close(y, K.ref.q_matmul(x, raw, kname, 0, bias=b), 1e-5, "vs reference")
    else:        # prefill: dequantized panels, float activations
        assert_close(y, x @ wd.T + b, 1e-5, "vs dequantized float")
    # int8 activations: each element off by at most half a step of its block of 32 (max |x| / 127)
    step = np.repeat(np.abs(x).reshape(M, -1, 32).max(-1) / 127, 32, axis=1)
    bound = (step * 0.5) @ np.abs(wd).T * 1.001 + 1e-4
    assert (np.abs(y - (x @ wd.T + b)) <= bound).all(), "vs float activations"


def test_q_matmul_rejects_bad_block_rows(rng):
    raw = random_blocks("Q4_K", (4, 512), rng)
    x = np.ones((1, 512), np.float32)
    with pytest.raises(ValueError, match="rows of 288 bytes"):
        K.q_matmul(x, np.ascontiguousarray(raw[:, :-1]), "q4_k", 0)
    with pytest.raises(ValueError, match="K a multiple of 256"):
        K.q_matmul(np.ones((1, 500), np.float32), raw, "q4_k", 0)
    with pytest.raises(ValueError, match="blocks hold 256 elements"):
        K.q_matmul(x, raw, "q4_k", 32)
    with pytest.raises(ValueError, match="read from GGUF files"):
        K.q_quantize(np.ones((2, 256), np.float32), "q4_k", 32)


# a Llama 256 wide (K-quant rows), ffn 320 (ffn_down's rows are not a multiple of 256)
SHAPE = dict(hidden=256, ffn=320, heads=4, kv_heads=2, layers=2, tied=False)
KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "token_embd", "output")


def hf_logits(path, ids):
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy()


def kl_top1(logits, ref):
    p = torch.log_softmax(torch.tensor(ref, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1)
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    return kl, float((logits.argmax(-1) == ref.argmax(-1)).mean())


@pytest.mark.parametrize("type_name", ALL_QUANTIZED)
def test_tiny_model_in_each_type_matches_transformers(tmp_path, type_name):
    types = {k: type_name for k in KINDS}
    types["ffn_down"] = type_name if block_size(type_name) == 32 else "Q8_0"
    path = build(tmp_path, types, **SHAPE)
    ids = list(range(3, 40))
    ref = hf_logits(path, ids)
    eng = Engine.from_pretrained(path)
    assert eng.info["dtype"] == "gguf"
    kname = {"Q8_0": "q8", "Q4_0": "q4", "Q4_1": "q4"}.get(type_name, type_name.lower())
    assert eng.info["quantized"]["model.layers.0.mlp.up_proj.weight"][0] == kname
    # prefill (37 rows): dequantized panels with float activations, as transformers computes
    assert_close(eng.logits(ids), ref, 1e-4, "prefill logits")
    # up to 16 rows: the integer path (int8 activations in blocks of 32)
    dec = np.stack([eng.logits(ids[:t + 1])[-1] for t in range(16)])
    kl, top1 = kl_top1(dec, ref[:16])
    assert kl < 5e-3 and top1 >= 0.9, (kl, top1)
    f32 = Engine.from_pretrained(path, dtype="float32")
    assert_close(f32.logits(ids), ref, 1e-4, "float32 logits")


def test_q4_k_m_like_mix_loads_tensor_by_tensor(tmp_path):
    """Q4_K with Q6_K for attn_v, ffn_down's 320-wide rows in Q5_0, the head in Q6_K: each tensor
    runs in its own type (no fused q|k|v across types)."""
    types = {k: "Q4_K" for k in KINDS}
    types.update(attn_v="Q6_K", ffn_down="Q5_0", output="Q6_K")
    path = build(tmp_path, types, **SHAPE)
    eng = Engine.from_pretrained(path)
    q = eng.info["quantized"]
    assert q["model.layers.0.self_attn.q_proj.weight"] == ("q4_k", 256)
    assert q["model.layers.0.self_attn.v_proj.weight"] == ("q6_k", 256)
    assert q["model.layers.1.mlp.down_proj.weight"] == ("q5_0", 32)
    assert q["lm_head.weight"] == ("q6_k", 256)
    ids = list(range(5, 30))
    ref = hf_logits(path, ids)
    assert_close(eng.logits(ids), ref, 1e-4, "prefill logits")
    greedy = eng.generate(ids[:4], max_tokens=12, ignore_eos=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf.generate(torch.tensor([ids[:4]]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                           pad_token_id=0, attention_mask=torch.ones(1, 4, dtype=torch.long))[0, 4:].tolist()
    agree = sum(a == b for a, b in zip(greedy.token_ids, want))
    assert agree >= 10, (greedy.token_ids, want)


def test_bad_block_tensor_is_named(tmp_path):
    path = build(tmp_path, {"ffn_up": "Q4_K"}, **SHAPE)
    bad = tmp_path / "bad.gguf"  # rows of 200: not a whole number of 256-blocks
    bad.write_bytes(patch_tensor_info(path, "blk.1.ffn_up.weight", first_dim=200))
    with pytest.raises(GGUFError, match=r"'blk.1.ffn_up.weight' has rows of 200 elements, not a whole number of Q4_K"):
        Engine.from_pretrained(bad)
    short = tmp_path / "short.gguf"
    short.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(GGUFError, match="beyond the file"):
        Engine.from_pretrained(short)


def test_info_lists_tensor_types_and_bytes(tmp_path, capsys):
    types = {k: "Q4_K" for k in KINDS}
    types.update(attn_v="Q6_K", ffn_down="Q5_0")
    path = build(tmp_path, types, **SHAPE)
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Q4_K" in out and "Q6_K" in out and "Q5_0" in out and "F32" in out
    f = gguf.GGUFReader(str(path))
    q4k = sum(int(t.n_bytes) for t in f.tensors if t.tensor_type == gguf.GGMLQuantizationType.Q4_K)
    assert f"{q4k:,}" in out
