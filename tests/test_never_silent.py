"""Never wrong in silence: sizes from a file or an argument bounded before anything is allocated,
malformed files refused by name, one exception family, no silent coercion, NaN never sampled,
streams that stop from any thread, and calls on one Engine from many threads that queue."""
from __future__ import annotations

import json
import shutil
import struct
import threading

import numpy as np
import pytest
from fastlm import Engine, SamplingParams, _C, cli
from fastlm.config import ConfigError
from fastlm.formats import GGUFError, SafetensorsError, write_safetensors
from fastlm.formats.gguf import GGUFFile
from fastlm.formats.safetensors import SafetensorsFile
from tiny_models import build as build_hf


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_hf("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def eng(llama):
    return Engine.from_pretrained(llama)


def ids(n, seed=0, vocab=320):
    return np.random.default_rng(seed).integers(3, vocab, size=n).tolist()


def edited_config(src, tmp_path, **changes):
    """A copy of the model folder src whose config.json has `changes` (None removes a key)."""
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


# ---- sizes bounded before allocation ----

@pytest.mark.parametrize("field,value", [
    ("max_position_embeddings", 2 ** 54), ("head_dim", 2 ** 31 - 1), ("head_dim", 10 ** 9),
    ("num_hidden_layers", 10 ** 7), ("hidden_size", 0), ("vocab_size", -3), ("num_key_value_heads", 3),
    ("intermediate_size", 2.5), ("num_attention_heads", True)])
def test_config_sizes_are_checked_before_anything_is_sized_by_them(llama, tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        Engine.from_pretrained(edited_config(llama, tmp_path, **{field: value}))


def test_the_kv_cache_size_cannot_wrap_around():
    spec = {"n_layers": 1024, "hidden": 64, "n_heads": 8, "n_kv_heads": 8, "head_dim": 1024, "ffn": 64, "vocab": 32,
            "max_seq": 1 << 24, "norm": "rms", "norm_eps": 1e-5, "mlp": "swiglu", "pos": "learned"}
    with pytest.raises(ValueError, match="KV cache"):
        _C.Model(spec)
    spec.update(max_seq=1 << 40)
    with pytest.raises(ValueError, match="2\\^24"):
        _C.Model(spec)


def test_max_seq_len_is_bounded(llama):
    with pytest.raises(ValueError, match="max_seq_len"):
        Engine.from_pretrained(llama, max_seq_len=2 ** 40)


def test_slot_and_sample_counts_are_bounded(eng):
    with pytest.raises(ValueError, match="slots must be in"):
        eng.model.ensure_slots(10 ** 6)
    with pytest.raises(ValueError, match="n must be"):
        SamplingParams(n=10 ** 5)


# ---- malformed files ----

def safetensors_bytes(header: dict, data: bytes, pad_to: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if pad_to is None else pad_to) + raw + data


def two_tensors(begin_b=16, end_b=32):
    return {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [begin_b, end_b]}}


@pytest.mark.parametrize("case", ["overlap", "shifted", "hole", "header_short", "duplicate"])
def test_malformed_safetensors_are_refused(tmp_path, case):
    data = np.arange(8, dtype=np.float32).tobytes()
    if case == "overlap":
        raw = safetensors_bytes(two_tensors(8, 24), data)
    elif case == "shifted":
        raw = safetensors_bytes(two_tensors(17, 33), data + b"\0")
    elif case == "hole":
        raw = safetensors_bytes(two_tensors(), data + b"\0\0\0\0")
    elif case == "header_short":  # header length n - 1: the data would start a byte early
        h = json.dumps(two_tensors()).encode() + b" "
        raw = struct.pack("<Q", len(h) - 1) + h + data
    else:
        h = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, ' \
            b'"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}'
        raw = struct.pack("<Q", len(h)) + h + data
    p = tmp_path / "x.safetensors"
    p.write_bytes(raw)
    with pytest.raises(SafetensorsError, match="x.safetensors"):
        SafetensorsFile(p)


def test_deep_json_is_a_format_error(tmp_path):
    h = b"[" * 100000 + b"]" * 100000
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h)
    with pytest.raises(SafetensorsError):
        SafetensorsFile(p)


def test_a_missing_head_is_not_tied_when_the_config_says_untied(llama, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(llama, dst)
    f = SafetensorsFile(dst / "model.safetensors")
    tensors = {n: np.array(f.get(n)) for n in f.entries if n != "lm_head.weight"}
    write_safetensors(dst / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="lm_head.weight"):
        Engine.from_pretrained(dst)


@pytest.mark.parametrize("changes,field", [
    ({"rope_theta": 0.0}, "rope_theta"), ({"rope_theta": -5.0}, "rope_theta"), ({"rope_theta": float("nan")}, "rope_theta"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 0.0}}, "factor"), ({"rope_scaling": -1}, "rope_scaling"),
    ({"rms_norm_eps": float("inf")}, "rms_norm_eps"), ({"num_hidden_layers": 1}, "layer 1"),
    ({"tie_word_embeddings": "abc"}, "tie_word_embeddings")])
def test_config_values_that_would_run_wrong_are_refused(llama, tmp_path, changes, field):
    if "rope_theta" in changes:  # transformers 5 writes the base inside rope_parameters
        changes = {"rope_parameters": {"rope_type": "default", "rope_theta": changes["rope_theta"]}}
    with pytest.raises(ConfigError, match=field):
        Engine.from_pretrained(edited_config(llama, tmp_path, **changes))


def gguf_file(tmp_path, alignment=None, arrays=(), tensors=(("t", np.zeros(8, np.float32)),)):
    import gguf

    p = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    if alignment is not None:
        w.add_uint32("general.alignment", alignment)
    for key, values, vtype in arrays:
        w.add_key_value(key, values, gguf.GGUFValueType.ARRAY, sub_type=vtype)
    for name, a in tensors:
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p


@pytest.mark.parametrize("alignment", [0, 3, 12])
def test_gguf_alignment_must_be_a_multiple_of_8(tmp_path, alignment):
    p = gguf_file(tmp_path, alignment=32)
    raw = bytearray(p.read_bytes())
    key = b"general.alignment"
    i = raw.index(key) + len(key) + 4  # the value after its type
    raw[i:i + 4] = struct.pack("<I", alignment)
    p.write_bytes(bytes(raw))
    with pytest.raises(GGUFError, match="alignment"):
        GGUFFile(p)


def test_gguf_overlapping_misaligned_and_duplicate_tensors_are_refused(tmp_path):
    p = gguf_file(tmp_path, tensors=(("a", np.zeros(8, np.float32)), ("b", np.zeros(8, np.float32))))
    raw = bytes(p.read_bytes())
    i = raw.index(b"\x01\x00\x00\x00\x00\x00\x00\x00b") + 9  # tensor b's record: n_dims, dims, type, offset
    off_at = i + 4 + 8 + 4
    for offset, what in ((0, "overlap"), (36, "not a multiple")):
        bad = bytearray(raw)
        bad[off_at:off_at + 8] = struct.pack("<Q", offset)
        p.write_bytes(bytes(bad))
        with pytest.raises(GGUFError, match=what):
            GGUFFile(p)
    bad = bytearray(raw)
    bad[i - 1:i] = b"a"  # tensor b renamed a
    p.write_bytes(bytes(bad))
    with pytest.raises(GGUFError, match="twice"):
        GGUFFile(p)


def test_gguf_bool_arrays_read_in_one_go_and_bounded(tmp_path):
    import gguf

    flags = [bool(i % 3) for i in range(100000)]
    p = gguf_file(tmp_path, arrays=[("x.flags", flags, gguf.GGUFValueType.BOOL)])
    assert GGUFFile(p).metadata["x.flags"] == flags
    raw = bytearray(p.read_bytes())
    i = raw.index(b"x.flags") + len(b"x.flags") + 4 + 4  # value type ARRAY, element type BOOL, then the count
    raw[i:i + 8] = struct.pack("<Q", 97_598_899)
    p.write_bytes(bytes(raw))
    with pytest.raises(GGUFError, match="does not fit"):
        GGUFFile(p)


# ---- NaN is never sampled ----

def test_nan_logits_raise_instead_of_sampling_token_zero(llama, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(llama, dst)
    f = SafetensorsFile(dst / "model.safetensors")
    tensors = {n: np.array(f.get(n)) for n in f.entries}
    tensors["model.norm.weight"][3] = np.nan
    write_safetensors(dst / "model.safetensors", tensors)
    e = Engine.from_pretrained(dst)
    for params in (SamplingParams(max_tokens=2), SamplingParams(max_tokens=2, temperature=0.7, seed=1)):
        with pytest.raises(FloatingPointError, match="NaN"):
            e.generate(ids(5), params)


# ---- no silent coercion ----

@pytest.mark.parametrize("prompt", [[1.5, 2.5], [True, False], np.array([1.0, 2.0]), b"abc", b"\xff\xfe"],
                         ids=["floats", "bools", "float-array", "bytes", "bad-bytes"])
def test_prompts_are_not_coerced(eng, prompt):
    with pytest.raises(TypeError):
        eng.generate(prompt, max_tokens=1)


def test_integer_prompts_of_any_int_type_still_work(eng):
    want = eng.generate(ids(4), max_tokens=3).token_ids
    assert eng.generate(np.asarray(ids(4), np.int64), max_tokens=3).token_ids == want
    assert eng.generate([np.int32(t) for t in ids(4)], max_tokens=3).token_ids == want


@pytest.mark.parametrize("bias", [{1.5: 1.0}, {True: 1.0}, {"x": 1.0}])
def test_logit_bias_keys_must_be_token_ids(bias):
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias=bias)


def test_logit_bias_keys_as_strings_still_work():
    assert SamplingParams(logit_bias={"7": 1.0}).logit_bias == {7: 1.0}


def test_temperature_too_small_to_sample_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=1e-320)


def test_detokenize_checks_ids(tmp_path):
    from tiny_gguf import build as build_gguf

    e = Engine.from_pretrained(build_gguf(tmp_path))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        e.detokenize([10 ** 9])


def test_an_empty_prompt_or_conversation_is_refused_in_every_mode(tmp_path, capsys):
    from tiny_gguf import build as build_gguf

    path = build_gguf(tmp_path)
    e = Engine.from_pretrained(path)
    with pytest.raises(ValueError, match="empty"):
        e.generate("", max_tokens=1)
    with pytest.raises(ValueError, match="empty"):
        e.chat([], max_tokens=1)
    for extra in ([], ["--no-chat"]):
        assert cli.main(["generate", "-m", str(path), ""] + extra) == 2
        assert "empty" in capsys.readouterr().err


# ---- streams ----

def test_breaking_out_of_a_stream_leaves_its_completion(eng):
    stream = eng.stream(ids(5), max_tokens=8, ignore_eos=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    assert stream.completion is not None and len(stream.completion.token_ids) == 3


def test_close_from_another_thread_stops_the_stream(eng):
    """close() from the main thread while a worker is inside the stream's steps."""
    stream = eng.stream(ids(5), max_tokens=600, ignore_eos=True)
    seen, errors = [], []

    def consume():
        try:
            for c in stream:
                seen.append(c)
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    t = threading.Thread(target=consume)
    t.start()
    while len(seen) < 3 and t.is_alive():
        pass
    stream.close()
    t.join(60)
    assert not t.is_alive() and not errors
    assert len(seen) < 600 and stream.completion.finish_reason == "abort"
    eng.generate(ids(3), max_tokens=2)  # the slots were given back


def test_to_openai_validates_against_the_openai_types(eng):
    openai = pytest.importorskip("openai")
    stream = eng.stream(ids(5), max_tokens=8, ignore_eos=True)
    next(stream)
    stream.close()
    openai.types.Completion.model_validate(stream.completion.to_openai())
    openai.types.Completion.model_validate(eng.generate(ids(5), max_tokens=4, n=2, temperature=0.5).to_openai())


# ---- threads ----

def test_threads_on_one_engine_queue_and_equal_the_serial_results(eng):
    prompts = [ids(n, seed=n) for n in (3, 40, 7, 90, 1, 25, 60, 12)]
    serial = [eng.generate(p, max_tokens=6, ignore_eos=True).token_ids for p in prompts]
    results, errors = {}, []

    def worker(i):
        try:
            for k in range(4):
                j = (i + k) % len(prompts)
                got = eng.generate(prompts[j], max_tokens=6, ignore_eos=True).token_ids
                results[(i, k)] = (j, got)
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 32 and all(got == serial[j] for j, got in results.values())


def test_bench_json_has_no_profile_unless_asked(llama, capsys):
    assert cli.main(["bench", "-m", str(llama), "-p", "4", "-n", "2", "-r", "1", "--ctx", "32", "--json"]) == 0
    assert "profile_s" not in capsys.readouterr().out


# ---- kernels ----

def _buf(rng, rows=8, cols=64):
    return rng.standard_normal((rows, cols)).astype(np.float32)


@pytest.mark.parametrize("op", ["rms_norm", "layer_norm", "softmax", "gelu_tanh", "silu_mul", "add", "rope",
                                "matmul", "q_matmul"])
def test_out_that_partly_overlaps_an_input_is_refused(rng, op):
    from fastlm import kernels as K

    buf = _buf(rng)
    x, out = buf[:4], buf[2:6]  # rows 2, 3 are both
    ones = np.ones(64, np.float32)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    calls = {"rms_norm": lambda: K.rms_norm(x, ones, 1e-5, out=out),
             "layer_norm": lambda: K.layer_norm(x, ones, ones, 1e-5, out=out),
             "softmax": lambda: K.softmax(x, out=out), "gelu_tanh": lambda: K.gelu_tanh(x, out=out),
             "silu_mul": lambda: K.silu_mul(x, buf[4:], out=out), "add": lambda: K.add(buf[4:], x, out=out),
             "rope": lambda: K.rope(buf.reshape(8, 4, 16)[:4], np.arange(4), out=buf.reshape(8, 4, 16)[2:6]),
             "matmul": lambda: K.matmul(rng.standard_normal((4, 64)).astype(np.float32), buf,
                                        out=buf.reshape(-1)[:32].reshape(4, 8)),
             "q_matmul": lambda: K.q_matmul(x, K.q_quantize(w, "q8", 32), "q8", 32, out=out)}
    with pytest.raises(ValueError, match="overlap"):
        calls[op]()


def test_out_may_still_be_the_input_itself(rng):
    from fastlm import kernels as K

    x = _buf(rng)
    want = K.softmax(x)
    K.softmax(x, out=x)
    np.testing.assert_array_equal(x, want)


def test_softmax_propagates_nan_as_the_reference(isa):
    from fastlm import kernels as K

    x = np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], np.float32)
    got = K.softmax(x)
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()
    assert np.isnan(K.ref.softmax(x)[0]).all()


def test_a_nan_weight_is_refused_at_quantization(rng):
    from fastlm import kernels as K
    from fastlm.quant import QuantScheme

    w = rng.standard_normal((4, 64)).astype(np.float32)
    w[1, 5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        K.q_quantize(w, "q8", 32)
    with pytest.raises(ValueError, match="NaN"):
        QuantScheme("int4", method="search").quantize("w", w, "q4", 32)


def test_a_wrong_argument_type_is_a_type_error():
    from fastlm import kernels as K

    z = np.zeros((1, 1, 8), np.float32)
    with pytest.raises(TypeError, match="scale"):
        K.attention(z, z, z, scale="x")


def test_quantize_says_which_method_ran(tmp_path, capsys):
    from tiny_gguf import build as build_gguf

    src = build_gguf(tmp_path / "g", types={k: "Q4_1" for k in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                                 "ffn_gate", "ffn_up", "ffn_down")})
    # every 4-bit tensor is a GGUF block kept as it is; ffn_down (K = 96, no whole 64-blocks) goes to int8
    assert cli.main(["quantize", str(src), str(tmp_path / "q"), "--dtype", "int4", "--keep-8bit", "down"]) == 0
    out = capsys.readouterr().out
    assert "rtn (asked for gptq" in out
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["method"] == "rtn"


def test_help_needs_no_model_and_bad_flags_fail_before_loading(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--ctx", "0", "x", "-m", "/nonexistent"])
    assert e.value.code == 2 and "--ctx" in capsys.readouterr().err


def test_info_json_into_a_closed_pipe_is_quiet():
    import subprocess
    import sys

    p = subprocess.run(f"{sys.executable} -m fastlm.cli info --json | head -c 10", shell=True, capture_output=True,
                       text=True)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


class _Terminal:
    """A stderr that says it is a terminal, keeping what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_long_steps_show_a_progress_bar_on_a_terminal_only(llama, monkeypatch, tty):
    import io
    import sys

    err = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    Engine.from_pretrained(llama, dtype="int8", progress=True)
    got = err.text if tty else err.getvalue()
    assert ("quantizing" in got and "layer" in got) if tty else got == ""
