"""Quantized SmolLM2-135M-Instruct: fastlm int8 / int4 next to llama.cpp Q8_0 / Q4_1 and torch's
dynamic int8 (quantize_dynamic), speed interleaved round by round, and quality (mean KL vs fp32,
top-1 agreement, perplexity) over Python's own documentation text, plus peak memory.

    pip install ".[bench]" transformers gguf accelerate llama-cpp-python
    python benchmarks/quantized.py speed [--rounds 5]
    python benchmarks/quantized.py quality [--tokens 4096] [--twin /tmp/twin]   # twin: benchmarks/float_twin.py
    python benchmarks/quantized.py memory

llama.cpp's Q8_0 GGUF is written once from the default model with gguf-py (the Q4_1 GGUF is the
default model itself); llama.cpp loads with weight repacking off (it crashes on some CPUs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from compare_engines import FastLM, LlamaCpp, Transformers, float_gguf  # noqa: E402
from fastlm import Engine, get_num_threads  # noqa: E402
from fastlm.hub import DEFAULT_MODEL, cache_dir, resolve  # noqa: E402


def eval_text(n_chars: int = 60000) -> str:
    """The reference pages of Python's documentation, as they ship in pydoc_data."""
    import pydoc_data.topics as topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))[:n_chars]


def q8_gguf(src: Path) -> Path:
    """The default model as a Q8_0 GGUF (gguf-py's quantizer: llama.cpp's Q8_0 bit for bit)."""
    import gguf

    out = cache_dir() / "SmolLM2-135M-Instruct.Q8_0.gguf"
    if out.exists():
        return out
    f32 = float_gguf(src, "F32")
    r = gguf.GGUFReader(str(f32))
    w = gguf.GGUFWriter(str(out), "llama")
    for field in r.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(field.name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(field.name, field.contents(), vtype)
    for t in r.tensors:
        a = np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))
        if a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(t.name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def no_repack() -> None:
    import llama_cpp.llama_cpp as lc

    default = lc.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p
    lc.llama_model_default_params = params


class FastLMMixed(FastLM):
    """int4 with the projections the quality bars need kept at int8 (see README)."""

    def __init__(self, path, keep=("down", "v", "o")):
        self.name = f"fastlm int4 ({','.join(keep)} int8)"
        self.e = Engine.from_pretrained(path, dtype="int4", keep_8bit=keep, max_seq_len=2048)
        self.m, self.s = self.e.model, self.e.slots
        self.s.ensure(1)


class TorchDynamic(Transformers):
    def __init__(self, path: Path):
        super().__init__(path)
        self.name = "torch quantize_dynamic int8"
        self.model = self.torch.ao.quantization.quantize_dynamic(self.model, {self.torch.nn.Linear},
                                                                 dtype=self.torch.qint8)


def speed(args) -> dict:
    q41 = resolve(DEFAULT_MODEL)
    engines = [FastLM(q41, "int8"), FastLM(q41, "int4"), FastLMMixed(q41)]
    try:
        no_repack()
        engines += [LlamaCpp(q8_gguf(q41), "Q8_0"), LlamaCpp(q41, "Q4_1")]
    except ImportError:
        print("llama-cpp-python is not installed: its columns are left out", file=sys.stderr)
    engines.append(TorchDynamic(q41))
    ids = np.random.default_rng(0).integers(100, 40000, size=args.prefill).tolist()
    res: dict[str, dict[str, list[float]]] = {e.name: {"prefill": [], "decode": []} for e in engines}
    for e in engines:  # warm-up
        e.prefill(ids[:64])
        e.decode(4)
    for r in range(args.rounds):
        for e in engines:
            res[e.name]["prefill"].append(e.prefill(ids))
            res[e.name]["decode"].append(e.decode(args.decode))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    out = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in res.items()}
    print(f"\n{args.rounds} interleaved rounds, {get_num_threads()} threads, medians (tokens/s)\n")
    print(f"| engine | prefill pp{args.prefill} | decode tg{args.decode} |\n|---|---:|---:|")
    for n, d in out.items():
        print(f"| {n} | {d['prefill']:.1f} | {d['decode']:.1f} |")
    td = out["torch quantize_dynamic int8"]["decode"]
    for n in [e.name for e in engines if e.name.startswith("fastlm")]:
        print(f"{n} decode / torch quantize_dynamic decode: {out[n]['decode'] / td:.2f}x")
    return out


def torch_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def quality(args) -> dict:
    from fastlm.tools.perplexity import evaluate, log_softmax_rows

    rows = {}
    models = [("SmolLM2 (Q4_1 GGUF)", DEFAULT_MODEL)] + ([("float twin", args.twin)] if args.twin else [])
    for label, path in models:
        ref = Engine.from_pretrained(path, dtype="float32", max_seq_len=args.ctx)
        ids = ref.tokenize(eval_text())[:args.tokens]
        cands = [("fastlm int8", dict(dtype="int8")), ("fastlm int4 rtn", dict(dtype="int4")),
                 ("fastlm int4 gptq, down/v/o int8", dict(dtype="int4", quant_method="gptq", keep_8bit=("down", "v", "o")))]
        for name, kw in cands:
            eng = Engine.from_pretrained(path, max_seq_len=args.ctx, **kw)
            for p in (["prefill", "decode"] if args.decode_path else ["prefill"]):
                s = evaluate(eng, ids, args.ctx, reference=ref, path=p)
                rows[f"{label} | {name} ({p})"] = s.as_dict()
                print(f"| {label} | {name} ({p}) | {s.kl:.4f} | {100 * s.top1:.2f}% | "
                      f"{s.perplexity:.3f} / {s.ref_perplexity:.3f} |", flush=True)
        if label.startswith("SmolLM2"):  # torch's dynamic int8 on the same windows
            import torch
            import transformers

            gp = resolve(DEFAULT_MODEL)
            fp = transformers.AutoModelForCausalLM.from_pretrained(str(gp.parent), gguf_file=gp.name,
                                                                   dtype=torch.float32).eval()
            dq = torch.ao.quantization.quantize_dynamic(fp, {torch.nn.Linear}, dtype=torch.qint8)
            kl = agree = n = 0.0
            for s in range(0, len(ids) - 1, args.ctx):
                w = ids[s:s + args.ctx]
                rp = log_softmax_rows(ref.logits(w)[:-1])
                lp = log_softmax_rows(torch_logits(dq, w)[:-1])
                kl += float((np.exp(rp) * (rp - lp)).sum())
                agree += float((rp.argmax(1) == lp.argmax(1)).sum())
                n += len(w) - 1
            rows[f"{label} | torch quantize_dynamic int8"] = {"kl": kl / n, "top1": agree / n}
            print(f"| {label} | torch quantize_dynamic int8 | {kl / n:.4f} | {100 * agree / n:.2f}% | |", flush=True)
    return rows


MEMORY_PROBE = r"""
import json, resource, sys
from fastlm import Engine
e = Engine.from_pretrained(sys.argv[1], max_seq_len=2048)
out = e.generate("The three primary colors are", max_tokens=64, ignore_eos=True)
m = e.model
kv = m.kv_bytes_per_slot * (out.usage.prompt_tokens + 64) / m.max_seq  # the pages touched
print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "weight_bytes": m.weight_bytes, "kv_bytes": kv, "dtype": e.info["dtype"]}))
"""


def memory(args) -> dict:
    from fastlm.tools.quantize import write_quantized

    out = {}
    for dtype in ("int8", "int4"):
        folder = cache_dir() / f"smollm2-135m-instruct-{dtype}"
        if not (folder / "model.safetensors").exists():
            write_quantized(DEFAULT_MODEL, folder, dtype=dtype)
        r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(folder)], capture_output=True, text=True, check=True)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        bound = 1.15 * d["weight_bytes"] + d["kv_bytes"] + 100e6
        d["bound"] = bound
        out[dtype] = d
        print(f"{dtype}: peak RSS {d['peak_rss'] / 1e6:.1f} MB; weights {d['weight_bytes'] / 1e6:.1f} MB, KV "
              f"{d['kv_bytes'] / 1e6:.1f} MB; bound 1.15 x weights + KV + 100 MB = {bound / 1e6:.1f} MB")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "quality", "memory"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--twin", default=None, help="a float twin folder (benchmarks/float_twin.py)")
    ap.add_argument("--decode-path", action="store_true", help="also score through the decode step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t = time.time()
    res = {"speed": speed, "quality": quality, "memory": memory}[args.what](args)
    print(f"({time.time() - t:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
