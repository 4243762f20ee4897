"""Quantized weights (q8 / q4 records): the C++ quantizer bit-exact with its NumPy twin, the
kernels against the reference and the dequantized float product, GGUF blocks taken without a float
round trip, int8 / int4 models against their float originals, quantized checkpoints that load
memory-mapped, GPTQ, and the perplexity / KL tool."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_close
from fastlm import Engine, cli
from fastlm import kernels as K
from fastlm import quant as Q
from fastlm.formats import qrecords as R
from fastlm.tools.quantize import write_quantized
from fastlm.tools.perplexity import evaluate

SHAPES = [(1, 1), (3, 7), (5, 33), (7, 100), (16, 576), (9, 1537)]


def weights(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    w *= rng.choice([1e-7, 1e-3, 1.0, 300.0], size=(shape[0], 1)).astype(np.float32)  # fp16 subnormal scales too
    w[0, : min(3, shape[1])] = 0
    return w


@pytest.mark.parametrize("qtype", ["q8", "q4"])
@pytest.mark.parametrize("G", [32, 64, 128])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_quantizer_bit_exact_with_numpy(isa, rng, qtype, G, shape):
    w = weights(rng, shape)
    rec = K.q_quantize(w, qtype, G)
    assert rec.dtype == np.uint8 and rec.shape == (shape[0], R.row_bytes(qtype, shape[1], G))
    np.testing.assert_array_equal(rec, Q.quantize_rtn(w, qtype, G))
    np.testing.assert_array_equal(rec, K.ref.q_quantize(w, qtype, G))
    deq = K.q_dequantize(rec, qtype, shape[1], G)
    np.testing.assert_array_equal(deq, R.dequantize(rec, qtype, shape[1], G))
    # error within half a step of the grid, plus what fp16 scales lose (rounding; a scale below
    # fp16's smallest subnormal flushes its group to zero, as ggml's do)
    step = np.abs(w).max(axis=1, keepdims=True) / (127 if qtype == "q8" else 7.5)
    assert (np.abs(deq - w) <= step * 0.56 + 4e-6).all()


@pytest.mark.parametrize("qtype", ["q8", "q4"])
@pytest.mark.parametrize("G", [32, 128])
@pytest.mark.parametrize("M,K_,N", [(1, 64, 1), (1, 576, 67), (2, 100, 7), (3, 33, 5), (5, 1536, 9),
                                    (8, 200, 40), (16, 64, 17), (17, 64, 17), (40, 576, 33)])
def test_q_matmul_against_reference_and_float(isa, rng, qtype, G, M, K_, N):
    w = rng.standard_normal((N, K_)).astype(np.float32)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    x[:, 0] *= 40  # an outlier channel, as real activations have
    b = rng.standard_normal(N).astype(np.float32)
    rec = K.q_quantize(w, qtype, G)
    y = K.q_matmul(x, rec, qtype, G, bias=b)
    wd = R.dequantize(rec, qtype, K_, G)
    if M <= 16:  # decode: activations quantized as the reference does (int16 rows / int8 blocks)
        assert_close(y, K.ref.q_matmul(x, rec, qtype, G, bias=b), 1e-5, "vs reference")
    else:      # prefill: dequantized panels, float activations
        assert_close(y, x @ wd.T + b, 1e-5, "vs dequantized float")
    assert_close(y, x @ wd.T + b, 1e-3 if qtype == "q8" else 3e-2, "vs float activations")


def test_q_matmul_bad_input(rng):
    w = rng.standard_normal((8, 64)).astype(np.float32)
    rec = K.q_quantize(w, "q4", 32)
    x = np.ones((1, 64), np.float32)
    with pytest.raises(ValueError, match=r"rows of 68 bytes, got shape \(8, 40\)"):
        K.q_matmul(x, rec, "q8", 32)
    with pytest.raises(ValueError, match="group size must be 32, 64 or 128"):
        K.q_matmul(x, rec, "q4", 16)
    with pytest.raises(ValueError, match="'q8', 'q4' or a GGUF block type"):
        K.q_quantize(w, "q5", 32)
    with pytest.raises(TypeError, match="uint8"):
        K.q_matmul(x, rec.view(np.int8), "q4", 32)
    with pytest.raises(ValueError, match="rows of"):
        K.q_matmul(np.ones((1, 65), np.float32), rec, "q4", 32)


@pytest.mark.parametrize("ggml", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_convert_exactly(rng, ggml):
    gguf = pytest.importorskip("gguf")
    from fastlm.formats.gguf import GGML_TYPES, dequantize

    w = rng.standard_normal((6, 128)).astype(np.float32)
    qt = getattr(gguf.GGMLQuantizationType, ggml)
    raw = gguf.quants.quantize(w, qt)
    code = next(c for c, (n, _, _) in GGML_TYPES.items() if n == ggml)
    want = dequantize(np.frombuffer(raw.tobytes(), np.uint8), code, w.shape)
    rec, qtype = R.from_ggml(np.frombuffer(raw.tobytes(), np.uint8), ggml, w.shape)
    assert qtype == ("q8" if ggml == "Q8_0" else "q4")
    np.testing.assert_array_equal(R.dequantize(rec, qtype, 128, 32), want)


def test_gptq_lowers_the_output_error(rng):
    w = rng.standard_normal((64, 256)).astype(np.float32)
    X = rng.standard_normal((1024, 256)) * np.exp(rng.standard_normal(256))  # uneven channel scales
    H = X.T @ X

    def out_err(rec):
        return float(((X @ (R.dequantize(rec, "q4", 256, 32) - w).T) ** 2).mean())
    rtn, search, gptq = Q.quantize_rtn(w, "q4", 32), Q.quantize_q4_search(w, 32), Q.gptq_q4(w, H, 32)
    assert out_err(search) < out_err(rtn)
    assert out_err(gptq) < 0.7 * out_err(search)


# ---- models ----

def prompt(n, seed=0):
    return np.random.default_rng(seed).integers(3, 320, size=n).tolist()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "odd"])
@pytest.mark.parametrize("dtype,tol", [("int8", 0.03), ("int4", 0.3)])
def test_quantized_models_stay_close(tiny, kind, dtype, tol):
    path = tiny(kind)
    ids = prompt(40, seed=1)
    ref = Engine.from_pretrained(path, dtype="float32").logits(ids)
    eng = Engine.from_pretrained(path, dtype=dtype)
    assert eng.info["dtype"] == dtype and eng.info["quantized"]
    assert_close(eng.logits(ids), ref, tol, f"{kind} {dtype} prefill")
    # decode (quantized activations) agrees with prefill (float activations) closely
    out = eng.generate(ids[:10], max_tokens=6, ignore_eos=True, logprobs=0)
    step = eng.logits(ids[:10] + out.token_ids[:-1])[-5:]
    lp = [x.logprob for x in out.logprobs[1:]]
    got = [float(np.log(np.exp(r - r.max()).sum()) * -1 + (r[t] - r.max())) for r, t in zip(step, out.token_ids[1:])]
    assert np.allclose(lp, got, atol=0.05 if dtype == "int8" else 0.2)


@pytest.mark.parametrize("qtype", ["q8", "q4"])
def test_q_matmul_rows_have_the_same_bits_in_any_batch(isa, qtype):
    """A decode row's result does not depend on the rows beside it (up to 16: the integer path,
    which widens or unpacks each weight block once for up to 8 rows of x)."""
    rng = np.random.default_rng(7)
    for N, width, G in ((67, 576, 32), (130, 1536, 64), (48, 640, 128)):
        q = K.q_quantize(rng.standard_normal((N, width)).astype(np.float32), qtype, G)
        x = rng.standard_normal((16, width)).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        alone = np.stack([K.q_matmul(x[i:i + 1], q, qtype, G, bias=bias)[0] for i in range(16)])
        for M in (2, 3, 16):
            np.testing.assert_array_equal(K.q_matmul(x[:M], q, qtype, G, bias=bias), alone[:M])


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_quantized_batches_equal_single_runs(tiny, dtype):
    eng = Engine.from_pretrained(tiny("qwen2"), dtype=dtype)
    prompts = [prompt(n, seed=20 + n) for n in (3, 17, 9, 30, 5, 11, 2, 8, 14, 6, 21, 4)]  # 12 rows per step
    batched = eng.generate(prompts, max_tokens=12, ignore_eos=True)
    for p, b in zip(prompts, batched):
        assert b.token_ids == eng.generate(p, max_tokens=12, ignore_eos=True).token_ids


def test_quantized_checkpoint_loads_in_place(tiny, tmp_path):
    path = tiny("llama")
    ids = prompt(30, seed=2)
    for dtype in ("int8", "int4"):
        out = write_quantized(path, tmp_path / dtype, dtype=dtype)
        meta = json.loads((out / "config.json").read_text())["quantization_config"]
        assert meta["dtype"] == dtype and meta["format_version"] == R.FORMAT_VERSION
        loaded = Engine.from_pretrained(out)
        assert loaded.info["dtype"] == dtype
        at_load = Engine.from_pretrained(path, dtype=dtype)
        np.testing.assert_array_equal(loaded.logits(ids), at_load.logits(ids))
        assert loaded.model.weight_bytes == at_load.model.weight_bytes
        with pytest.raises(ValueError, match=f"quantized to {dtype}"):
            Engine.from_pretrained(out, dtype="float32")
    assert cli.main(["quantize", str(path), str(tmp_path / "cli"), "--dtype", "int4", "--group-size", "64",
                     "--method", "search", "--keep-8bit", ""]) == 0
    assert Engine.from_pretrained(tmp_path / "cli").info["quantized"]["model.layers.0.mlp.up_proj.weight"] == ("q4", 64)


def test_gptq_checkpoint_with_8bit_projections(tmp_path):
    """fastlm quantize --dtype int4 defaults: GPTQ calibrated on the standard library's docstrings,
    down, v and o projections at int8."""
    pytest.importorskip("gguf")
    from tiny_gguf import build as build_gguf

    src = build_gguf(tmp_path / "src", {})  # float tensors: nothing to take as it is
    assert cli.main(["quantize", str(src), str(tmp_path / "q"), "--dtype", "int4"]) == 0
    eng = Engine.from_pretrained(tmp_path / "q")
    qz = eng.info["quantized"]
    assert qz["model.layers.1.mlp.down_proj.weight"] == ("q8", 32) and qz["model.layers.1.self_attn.v_proj.weight"] == ("q8", 32)
    assert qz["model.layers.1.self_attn.o_proj.weight"] == ("q8", 32)
    assert qz["model.layers.1.mlp.gate_proj.weight"] == ("q4", 32)
    ref = Engine.from_pretrained(src, dtype="float32")
    ids = ref.tokenize("The quick brown fox jumps over the lazy dog")
    assert_close(eng.logits(ids), ref.logits(ids), 0.3, "gptq int4")
    with pytest.raises(ValueError, match="keep_8bit names unknown projection 'mlp'"):
        Q.QuantScheme("int4", keep_8bit="mlp")


def test_newer_format_version_is_refused(tiny, tmp_path):
    from fastlm.formats import write_safetensors
    from fastlm.formats import open_checkpoint

    out = write_quantized(tiny("llama"), tmp_path / "q", dtype="int8")
    store = open_checkpoint(out)
    tensors = {n: np.array(store.get(n)) for n in store.names()}
    meta = dict(store.metadata)
    q = json.loads(meta["quantization"])
    q["version"] = R.FORMAT_VERSION + 1
    meta["quantization"] = json.dumps(q)
    write_safetensors(out / "model.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="newer than this fastlm reads"):
        Engine.from_pretrained(out)


def test_gguf_quantized_tensors_load_directly(tmp_path):
    pytest.importorskip("gguf")
    from tiny_gguf import build as build_gguf

    path = build_gguf(tmp_path, {"attn_q": "Q8_0", "attn_k": "Q4_1", "attn_v": "Q4_0", "ffn_down": "Q4_1",
                                 "ffn_up": "Q8_0", "ffn_gate": "Q4_0", "attn_output": "Q8_0", "token_embd": "Q8_0"})
    f32 = Engine.from_pretrained(path, dtype="float32")
    ids = f32.tokenize("The quick brown fox")
    for dtype, same in (("int8", ("q_proj", "up_proj", "o_proj")), ("int4", ("k_proj", "v_proj", "down_proj", "gate_proj"))):
        eng = Engine.from_pretrained(path, dtype=dtype)
        qz = eng.info["quantized"]
        for part in same:  # blocks in the target layout: the same values as the float load
            name = next(n for n in qz if part in n)
            assert qz[name] == (R.QTYPES[dtype], 32)
        assert_close(eng.logits(ids), f32.logits(ids), 0.01 if dtype == "int8" else 0.3, dtype)


def test_perplexity_and_kl(tiny, tmp_path, capsys):
    path = tiny("llama")
    eng = Engine.from_pretrained(path, dtype="float32")
    ids = prompt(300, seed=3)
    same = evaluate(eng, ids, 128, reference=eng)
    assert same.kl == pytest.approx(0, abs=1e-9) and same.top1 == 1 and same.tokens == 300 - 3
    q = evaluate(Engine.from_pretrained(path, dtype="int4"), ids, 128, reference=eng)
    assert q.kl > 0 and 0 < q.top1 <= 1 and np.isfinite(q.perplexity)
    dec = evaluate(Engine.from_pretrained(path, dtype="int8"), ids[:40], 40, reference=eng, path="decode")
    assert dec.kl < 0.01
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate(eng, ids, 10_000)


def test_perplexity_cli(tmp_path, capsys):
    pytest.importorskip("gguf")
    from tiny_gguf import build as build_gguf

    path = build_gguf(tmp_path / "m")
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 30)
    assert cli.main(["perplexity", "-m", str(path), "--dtype", "int8", "--reference-dtype", "float32", "--ctx", "64",
                     "--json", str(text)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dtype"] == "int8" and d["kl"] >= 0 and 0 <= d["top1"] <= 1 and d["perplexity"] > 1
