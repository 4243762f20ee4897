"""The CUDA kernels (fastlm.kernels.cuda) against NumPy and the CPU kernels.

Every kernel test runs on two backends: "emulated", the same CUDA sources compiled for the host
under the SIMT emulation (cuda/simt.h: fibers per thread, real barriers, warp shuffles, ldmatrix,
mma and cp.async modelled lane by lane), which runs everywhere; and "cuda", a real GPU, which
skips without one. The emulation checks arithmetic and indexing, and shared-memory races between
cp.async, ldmatrix and wgmma; not speed, nor races through plain loads and stores."""
from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import assert_close
from fastlm import _C, cli
from fastlm import kernels as K

cuda = K.cuda
emulated = _C.cuda_emulated


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.skipif(
    not cuda.available(), reason="no CUDA device visible"))])
def be(request):
    return emulated if request.param == "emulated" else cuda


def up(be, a, dtype=""):
    return be.DeviceArray.from_numpy(np.ascontiguousarray(a), dtype)


def bf16(a):
    """float32 rounded to bfloat16 (nearest even), as float32."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def attention_ref(q, k, v, causal):
    T, H, D = q.shape
    S, Hkv, _ = k.shape
    out = np.zeros((T, H, D))
    for h in range(H):
        s = q[:, h].astype(np.float64) @ k[:, h // (H // Hkv)].T / np.sqrt(D)
        if causal:
            s[np.arange(S)[None, :] > (S - T + np.arange(T))[:, None]] = -np.inf
        p = np.exp(s - s.max(1, keepdims=True))
        out[:, h] = (p / p.sum(1, keepdims=True)) @ v[:, h // (H // Hkv)]
    return out


def test_build_reports_cuda(capsys):
    status = _C.build_info()["cuda"]
    assert status.startswith("built for sm_80 sm_90") if cuda.built else "not built" in status or status == "off"
    assert isinstance(cuda.available(), bool) and cuda.device_count() >= 0
    assert (cuda.unavailable_reason() == "") == cuda.available()
    assert emulated.built and emulated.emulated and emulated.available()
    assert cli.main(["info"]) == 0
    assert "cuda:" in capsys.readouterr().out


@pytest.mark.skipif(not cuda.built or cuda.available(), reason="checks the no-device path")
def test_no_device_raises_clearly():
    """No device, or one older than sm_80: every call says which, instead of failing in a kernel."""
    why = cuda.unavailable_reason()
    assert why.startswith(("no CUDA device is visible", "fastlm's CUDA kernels need compute capability 8.0"))
    with pytest.raises(RuntimeError, match=re.escape(why)):
        cuda.DeviceArray.from_numpy(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("M,N,Kd", [(1, 1, 1), (7, 65, 129), (64, 64, 64), (70, 130, 100)])
def test_sgemm(be, rng, M, N, Kd):
    x, w, b = rng.standard_normal((M, Kd)), rng.standard_normal((N, Kd)), rng.standard_normal(N)
    got = be.matmul(up(be, x, "float32"), up(be, w, "float32"), up(be, b, "float32")).to_numpy()
    assert_close(got, x @ w.T + b, 1e-5, "sgemm")


@pytest.mark.parametrize("M,N,Kd", [(1, 9, 64), (3, 40, 100), (8, 33, 576), (11, 17, 32)])
def test_gemv(be, rng, M, N, Kd):
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    w = rng.standard_normal((N, Kd)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    assert_close(be.gemv(up(be, x), up(be, w), up(be, b)).to_numpy(), x @ w.T + b, 1e-5, "gemv f32")
    got = be.gemv(up(be, x), up(be, w, "bfloat16")).to_numpy()
    assert_close(got, x @ bf16(w).T, 1e-5, "gemv bf16")


@pytest.mark.parametrize("M,N,Kd", [(1, 1, 8), (130, 257, 200), (128, 128, 64), (17, 9, 8)])
def test_gemm_tensor_cores(be, rng, M, N, Kd):
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    w = rng.standard_normal((N, Kd)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    want = bf16(x).astype(np.float64) @ bf16(w).T + b
    got = be.gemm(up(be, x, "bfloat16"), up(be, w, "bfloat16"), up(be, b)).to_numpy()
    assert_close(got, want, 1e-5, "gemm bf16 -> f32")
    got = be.gemm(up(be, x, "bfloat16"), up(be, w, "bfloat16"), up(be, b), "bfloat16").to_numpy()
    assert_close(got, want, 8e-3, "gemm bf16 -> bf16")
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    got = be.gemm(up(be, x16), up(be, w16)).to_numpy()
    assert_close(got, x16.astype(np.float64) @ w16.T.astype(np.float64), 1e-5, "gemm f16")


def skip_without_wgmma(be):
    """On a GPU, wgmma runs only in a build for sm_90a on an sm_90 device; elsewhere a call by name
    says so (ValueError naming Hopper), and the test skips. The emulation always has it."""
    if be is not cuda:
        return
    if not cuda.wgmma_built:
        pytest.skip("this build has no sm_90a code")
    x = up(be, np.zeros((8, 64), np.float32), "bfloat16")
    try:
        cuda.gemm(x, x, kernel="wgmma")
    except ValueError as e:
        if "Hopper" in str(e):
            pytest.skip(str(e))
        raise


@pytest.mark.parametrize("M,N,Kd", [(1, 1, 8), (130, 257, 200), (128, 128, 64), (64, 300, 520)])
def test_gemm_wgmma(be, rng, M, N, Kd):
    """Hopper's warpgroup MMA path, by name."""
    skip_without_wgmma(be)
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    w = rng.standard_normal((N, Kd)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    want = bf16(x).astype(np.float64) @ bf16(w).T + b
    got = be.gemm(up(be, x, "bfloat16"), up(be, w, "bfloat16"), up(be, b), kernel="wgmma").to_numpy()
    assert_close(got, want, 1e-5, "gemm wgmma bf16 -> f32")
    got = be.gemm(up(be, x, "bfloat16"), up(be, w, "bfloat16"), None, "bfloat16", kernel="wgmma").to_numpy()
    assert_close(got, want - b, 8e-3, "gemm wgmma bf16 -> bf16")


@pytest.mark.parametrize("M,N,Kd", [(1, 1, 16), (130, 257, 144), (64, 8, 64), (70, 136, 528)])
@pytest.mark.parametrize("kernel", ["mma", "wgmma"])
def test_int8_gemm(be, rng, M, N, Kd, kernel):
    """int8 on mma.sync, and on Hopper's warpgroup MMA (m64n128k32 s8; on a GPU only where the build
    and the device have it): exact int32 sums, and the scaled fp32 output."""
    if kernel == "wgmma":
        skip_without_wgmma(be)
    x = rng.integers(-128, 128, (M, Kd)).astype(np.int8)
    w = rng.integers(-128, 128, (N, Kd)).astype(np.int8)
    exact = x.astype(np.int64) @ w.T.astype(np.int64)
    got = be.int8_matmul(up(be, x), up(be, w), kernel=kernel).to_numpy()
    assert got.dtype == np.int32 and np.array_equal(got, exact)
    sx = rng.random(M).astype(np.float32)
    sw = rng.random(N).astype(np.float32)
    got = be.int8_matmul(up(be, x), up(be, w), up(be, sx), up(be, sw), kernel=kernel).to_numpy()
    assert_close(got, exact * sx[:, None] * sw[None, :], 1e-6, "int8 scaled")
    assert np.array_equal(be.int8_matmul(up(be, x), up(be, w)).to_numpy(), exact)  # "auto"


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (4, 576), (2, 1300), (2, 4096), (1, 8192), (1, 8196)])
def test_norms_softmax_elementwise(be, rng, rows, cols):
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    u = rng.standard_normal((rows, cols)).astype(np.float32)
    w = rng.standard_normal(cols).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    X, U = up(be, x), up(be, u)
    assert_close(be.rms_norm(X, up(be, w), 1e-5).to_numpy(), K.rms_norm(x, w, 1e-5), 1e-5, "rms_norm")
    assert_close(be.layer_norm(X, up(be, w), up(be, b), 1e-5).to_numpy(), K.layer_norm(x, w, b, 1e-5), 1e-5, "layer_norm")
    assert_close(be.softmax(X).to_numpy(), K.softmax(x), 1e-5, "softmax")
    assert_close(be.add(X, U).to_numpy(), x + u, 1e-6, "add")
    assert_close(be.silu_mul(X, U).to_numpy(), K.silu_mul(x, u), 1e-5, "silu_mul")
    assert_close(be.gelu_tanh(X).to_numpy(), K.gelu_tanh(x), 1e-5, "gelu_tanh")
    assert_close(be.cast(X, "bfloat16").to_numpy(), bf16(x), 0, "cast to bf16")
    assert np.array_equal(be.cast(up(be, x * 50), "int8").to_numpy(), np.clip(np.rint(x * 50), -128, 127).astype(np.int8))


def test_embedding_and_rope(be, rng):
    table = rng.standard_normal((50, 24)).astype(np.float32)
    ids = np.array([3, 0, 49, 3], np.int32)
    assert_close(be.embedding(up(be, ids), up(be, table)).to_numpy(), table[ids], 0, "embedding f32")
    assert_close(be.embedding(up(be, ids), up(be, table, "bfloat16")).to_numpy(), bf16(table)[ids], 0, "embedding bf16")
    with pytest.raises(ValueError, match="out of range"):
        be.embedding(up(be, np.array([1, 50], np.int32)), up(be, table))
    x = rng.standard_normal((5, 3, 16)).astype(np.float32)
    pos = np.array([0, 1, 7, 300, 4000], np.int32)
    for interleaved in (False, True):
        for rot in (16, 8):
            inv = (1.0 / 10000.0 ** (np.arange(0, rot, 2) / rot)).astype(np.float32)
            X = up(be, x)
            be.rope(X, up(be, pos), up(be, inv), interleaved)
            want = K.rope(x, pos.astype(np.int64), inv_freq=inv, rotary_dim=rot, interleaved=interleaved)
            assert_close(X.to_numpy(), want, 1e-5, f"rope interleaved={interleaved} rot={rot}")


@pytest.mark.parametrize("T,S,H,Hkv,D,causal", [
    (1, 1, 1, 1, 64, True), (1, 700, 6, 2, 64, True), (5, 9, 4, 4, 32, True), (37, 37, 2, 1, 64, True),
    (3, 1100, 3, 3, 48, False), (2, 600, 2, 1, 96, True), (1, 40, 1, 1, 256, False)])
def test_attention_f32(be, rng, T, S, H, Hkv, D, causal):
    """Heads of a multiple of 32 take the 16-byte-load path (four keys a warp, P V split over
    thread groups), others (48) one key a warp."""
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((T, H, D), (S, Hkv, D), (S, Hkv, D)))
    got = be.attention(up(be, q), up(be, k), up(be, v), causal).to_numpy()
    assert_close(got, attention_ref(q, k, v, causal), 1e-5, "attention")


@pytest.mark.parametrize("block_rows", [64, 128])
@pytest.mark.parametrize("T,S,H,Hkv,D,causal", [
    (64, 64, 1, 1, 64, True), (70, 130, 4, 2, 64, True), (33, 200, 2, 2, 128, False), (1, 65, 1, 1, 128, True),
    (130, 130, 1, 1, 64, True), (200, 260, 2, 1, 128, True)])
def test_flash_attention(be, rng, T, S, H, Hkv, D, causal, block_rows):
    """Both block shapes: 16 queries a warp (Q in registers) and 32 (two m-tiles, Q from shared memory)."""
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((T, H, D), (S, Hkv, D), (S, Hkv, D)))
    got = be.flash_attention(*(up(be, a, "bfloat16") for a in (q, k, v)), causal, block_rows=block_rows).to_numpy()
    # P is rounded to bf16 for the P V product, as in FlashAttention-2: ~2^-9 relative
    assert_close(got, attention_ref(bf16(q), bf16(k), bf16(v), causal), 6e-3, "flash bf16")
    h = [a.astype(np.float16) for a in (q, k, v)]
    got = be.flash_attention(*(up(be, a) for a in h), causal, block_rows=block_rows).to_numpy()
    assert_close(got, attention_ref(*(a.astype(np.float32) for a in h), causal), 1.5e-3, "flash f16")


def test_bad_input_is_named(be):
    x = up(be, np.ones((4, 16), np.float32))
    with pytest.raises(TypeError, match="bfloat16 or float16"):
        be.gemm(x, x)
    with pytest.raises(ValueError, match="multiple of 8"):
        be.gemm(up(be, np.ones((2, 12), np.float32), "bfloat16"), up(be, np.ones((2, 12), np.float32), "bfloat16"))
    with pytest.raises(ValueError, match="matmul takes"):
        be.matmul(x, up(be, np.ones((4, 8), np.float32)))
    with pytest.raises(TypeError, match="int8"):
        be.int8_matmul(x, x)
    with pytest.raises(ValueError, match="kernel must be"):
        xb = up(be, np.ones((4, 16), np.float32), "bfloat16")
        be.gemm(xb, xb, kernel="tensor")
    with pytest.raises(ValueError, match="head_dim 64 or 128"):
        q = up(be, np.ones((2, 1, 32), np.float32), "bfloat16")
        be.flash_attention(q, q, q)
    with pytest.raises(ValueError, match="out has the wrong shape"):
        be.add(x, x, out=up(be, np.ones((2, 2), np.float32)))
    with pytest.raises(TypeError, match="device array"):
        be.add([1.0], [2.0])


def test_emulated_arrays_through_numpy_and_dlpack(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 16)).astype(np.float32)
    w = rng.standard_normal((5, 16)).astype(np.float32)
    y = emulated.matmul(x, w)  # NumPy arrays in, through __array_interface__
    t = torch.from_dlpack(y)  # a DeviceArray out, zero-copy through DLPack
    assert t.shape == (6, 5) and t.dtype == torch.float32
    assert_close(t.numpy(), x @ w.T, 1e-5, "dlpack export")
    xb = torch.from_numpy(x).to(torch.bfloat16)  # bf16 in through DLPack
    wb = torch.from_numpy(w).to(torch.bfloat16)
    got = torch.from_dlpack(emulated.gemm(xb, wb))
    torch.testing.assert_close(got, xb.float() @ wb.float().T, rtol=1e-5, atol=1e-5)
    yb = emulated.gemm(xb, wb, out_dtype="bfloat16")
    assert yb.dtype == "bfloat16" and torch.from_dlpack(yb).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="C-contiguous"):
        emulated.add(x.T, x.T)
    odd = torch.zeros(1 + 16 * 8, dtype=torch.bfloat16)[1:].view(16, 8)  # 2 bytes past an aligned start
    with pytest.raises(ValueError, match="16-byte aligned"):
        emulated.gemm(odd, odd)


@pytest.mark.skipif(not cuda.available(), reason="no CUDA device visible")
def test_torch_interop(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    x = torch.randn(33, 70, device="cuda")
    w = torch.randn(40, 70, device="cuda")
    y = torch.as_tensor(cuda.matmul(x, w), device="cuda")  # zero-copy through __cuda_array_interface__
    torch.testing.assert_close(y, x @ w.T, rtol=1e-4, atol=1e-4)
    out = torch.empty(33, 70, device="cuda")
    cuda.rms_norm(x, torch.ones(70, device="cuda"), 1e-6, out=out)
    torch.testing.assert_close(out, torch.nn.functional.rms_norm(x, (70,), eps=1e-6), rtol=1e-4, atol=1e-4)
    xb, wb = x[:, :64].bfloat16().contiguous(), w[:, :64].bfloat16().contiguous()
    yb = torch.from_dlpack(cuda.gemm(xb, wb))  # bf16 in and out through DLPack
    torch.testing.assert_close(yb, xb.float() @ wb.float().T, rtol=1e-3, atol=1e-3)
    with pytest.raises(TypeError, match="float32"):
        cuda.add(x.half(), x.half())
    with pytest.raises(TypeError, match="device array|wrong device"):
        cuda.add(np.ones(3, np.float32), np.ones(3, np.float32))


# ---- the decoder on the device: Engine.from_pretrained(..., device="cuda") ----

@pytest.fixture(params=["cuda-emulated", pytest.param("cuda", marks=pytest.mark.skipif(
    not cuda.available(), reason="no CUDA device visible"))])
def device(request):
    return request.param


def ids_for(n, seed):
    return np.random.default_rng(seed).integers(3, 320, size=n).tolist()


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_device_logits_match_cpu(tiny, device, kind):
    from fastlm import Engine

    path = tiny(kind)
    ids = ids_for(20, 1)
    got = Engine.from_pretrained(path, device=device).logits(ids)
    assert_close(got, Engine.from_pretrained(path).logits(ids), 2e-5, f"{kind} on {device}")


def test_device_bf16_prefill_on_tensor_cores(tiny, device):
    """A bf16 model: prefill rows go through the tensor-core GEMM with bf16 activations (the CPU
    keeps them in fp32), decode through the bf16 GEMV."""
    from fastlm import Engine

    path = tiny("bf16")
    dev, cpu = Engine.from_pretrained(path, device=device), Engine.from_pretrained(path)
    assert dev.info["dtype"] == "bfloat16"
    ids = ids_for(20, 5)
    assert_close(dev.logits(ids), cpu.logits(ids), 1e-2, "bf16 prefill")
    assert dev.generate(ids[:5], max_tokens=6, ignore_eos=True).token_ids == \
        cpu.generate(ids[:5], max_tokens=6, ignore_eos=True).token_ids


def test_device_bf16_cache_and_flash_prefill(tiny, device):
    """A bf16 model with heads of 64 keeps a bf16 KV cache, and its prefill chunks of 64 rows or
    more take FlashAttention-2 over that cache: a first chunk, then one on top of it (keys before
    the queries), against the CPU; decode then reads the bf16 cache."""
    from fastlm import Engine

    path = tiny("bf16_d64")
    dev, cpu = Engine.from_pretrained(path, device=device), Engine.from_pretrained(path)
    m, c = dev.model, cpu.model
    assert m.kv_dtype == "bfloat16" and m.kv_bytes_per_slot == 2 * 2 * 1 * 64 * m.max_seq * 2
    for x in (m, c):
        x.ensure_slots(1)
    ids = ids_for(200, 8)
    for chunk in (ids[:70], ids[70:]):  # blocks of 64 queries, then of 128 (keys before the queries)
        got, want = m.prefill(0, np.asarray(chunk, np.int32), True), c.prefill(0, np.asarray(chunk, np.int32), True)
        assert_close(got, want, 1e-2, f"flash prefill of {len(chunk)} after {m.slot_len(0) - len(chunk)}")
    assert m.flash_prefills == 2 and m.slot_len(0) == 200
    s, tok = np.zeros(1, np.int64), np.asarray([ids[-1]], np.int32)
    assert_close(m.decode(s, tok), c.decode(s, tok), 1e-2, "decode over the bf16 cache")
    assert dev.generate(ids[:80], max_tokens=6, ignore_eos=True).token_ids == \
        cpu.generate(ids[:80], max_tokens=6, ignore_eos=True).token_ids


def test_device_greedy_batches_and_samples_match_cpu(tiny, device):
    from fastlm import Engine, SamplingParams

    path = tiny("llama")
    dev, cpu = Engine.from_pretrained(path, device=device), Engine.from_pretrained(path)
    assert dev.model.device == device and dev.info["device"] == device
    prompts = [ids_for(7, 2), ids_for(3, 3)]
    got = dev.generate(prompts, max_tokens=6, ignore_eos=True)
    want = cpu.generate(prompts, max_tokens=6, ignore_eos=True)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    params = SamplingParams(max_tokens=4, temperature=0.8, seed=5, n=2, ignore_eos=True)
    got = dev.generate(prompts[0], params)  # the two samples share the prefill (copy_slot on the device)
    want = cpu.generate(prompts[0], params)
    assert [c.token_ids for c in got.choices] == [c.token_ids for c in want.choices]
    with pytest.raises(ValueError, match="context"):
        dev.generate(ids_for(700, 4), max_tokens=1)


def test_device_decode_replays_graphs(tiny, device):
    """Decode steps run as CUDA graphs, one per batch size and attention split count: the first
    prompt's keys cross 512 while it decodes (a second split, so a second graph), and the tokens
    are those of the step run launch by launch and of the CPU."""
    from fastlm import Engine

    path = tiny("llama")
    eng = Engine.from_pretrained(path, device=device)
    m = eng.model
    assert m.graphs and m.graph_replays == 0
    prompts = [ids_for(509, 6), ids_for(3, 7)]
    graphed = eng.generate(prompts, max_tokens=6, ignore_eos=True)
    replays = m.graph_replays
    assert replays >= 5
    m.graphs = False
    eager = eng.generate(prompts, max_tokens=6, ignore_eos=True)
    assert m.graph_replays == replays
    want = Engine.from_pretrained(path).generate(prompts, max_tokens=6, ignore_eos=True)
    assert [c.token_ids for c in graphed] == [c.token_ids for c in eager] == [c.token_ids for c in want]


def test_device_choice_is_checked(tiny):
    from fastlm import Engine

    path = tiny("llama")
    with pytest.raises(ValueError, match="device must be one of"):
        Engine.from_pretrained(path, device="tpu")
    with pytest.raises(ValueError, match="first CUDA device only"):
        Engine.from_pretrained(path, device="cuda:1")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Engine.from_pretrained(path, device="cuda-emulated", dtype="int8")
    if not cuda.available():
        with pytest.raises(ValueError, match="device='cuda'"):
            Engine.from_pretrained(path, device="cuda")
    m = Engine.from_pretrained(path, device="cuda-emulated").model
    with pytest.raises(ValueError, match="profil"):
        m.set_profiling(True)


def test_cli_bench_on_the_emulated_device(tiny, capsys):
    assert cli.main(["bench", "-m", str(tiny("llama")), "--device", "cuda-emulated", "-p", "8", "-n", "2", "-r", "1",
                     "--ctx", "64", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"isa": "cuda-emulated"' in out and '"test": "tg2"' in out


def test_cuda_benchmark_script_plumbing():
    """benchmarks/cuda.py --emulated: the GPU benchmark's calls, checked against torch on the CPU."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cuda.py"
    r = subprocess.run([sys.executable, str(script), "--emulated"], capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "gemm bf16 tensor cores (mma.sync)" in r.stdout and "bf16 tensor cores (wgmma)" in r.stdout
    assert "int8 gemm, int32 out (mma.sync)" in r.stdout and "int8 gemm, int32 out (wgmma)" in r.stdout


def test_the_emulation_keeps_cuda_semantics():
    """What the emulated kernel tests rely on: lanes waiting at different barriers raise instead of
    hanging, cp.async data is not there before its wait, shuffles exchange lanes within a warp, a
    captured graph runs only at its replay, and a cp.async into the operands of a wgmma that has
    not been waited for raises (on the hardware the copy may land before the wgmma reads), as does
    a cp.async into bytes another warp's ldmatrix read with no barrier between."""
    r = emulated._self_test()
    assert "deadlock" in r["deadlock"]
    assert r["cp_async_before_wait"] == [-1.0] * 4 and r["cp_async_after_wait"] == [1.0, 2.0, 3.0, 4.0]
    lanes = np.arange(64)
    warp_sums = np.where(lanes < 32, sum(range(32)), sum(range(32, 64)))
    assert np.array_equal(np.asarray(r["shuffle"]), (lanes ^ 1) + 100.0 * warp_sums)
    assert "while capturing a graph" in r["copy_while_capturing"]
    assert "unfinished wgmma" in r["wgmma_race"]
    assert "another warp read since the last barrier" in r["ldmatrix_race"]
    assert r["graph_before_replay"] == [-1.0] * 64
    assert np.array_equal(np.asarray(r["graph_after_replay"]), np.asarray(r["shuffle"]))
