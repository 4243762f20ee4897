"""SmolLM2-135M decode and prefill, fastlm next to transformers (torch) and llama.cpp
(llama-cpp-python, when installed), in one run, interleaved round by round.

    pip install ".[bench]" transformers gguf accelerate   # + llama-cpp-python for its column
    python benchmarks/compare_engines.py [--rounds 3] [--prefill 512] [--decode 64] [--json out.json]

llama.cpp needs float GGUFs: they are written once (F32 and F16) from the Q4_1 GGUF of the default
model into the cache folder, with the gguf package. Medians over rounds; tokens/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from fastlm import Engine, get_num_threads
from fastlm.hub import DEFAULT_MODEL, cache_dir, resolve


def float_gguf(src: Path, kind: str) -> Path:
    """The default model as an F32 or F16 GGUF for llama.cpp (weights exactly the dequantized Q4_1)."""
    import gguf
    from fastlm.formats.gguf import GGUFFile

    out = cache_dir() / f"SmolLM2-135M-Instruct.{kind}.gguf"
    if out.exists():
        return out
    f = GGUFFile(src)
    w = gguf.GGUFWriter(str(out), "llama")
    for key, value in f.metadata.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        if isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_string(key, value)
    for name in f.tensors:
        a = f.get(name)  # GGUF order: q/k stay permuted as llama.cpp wants them
        w.add_tensor(name, a.astype(np.float16) if kind == "F16" and a.ndim == 2 else a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


class FastLM:
    def __init__(self, path, dtype, device="cpu"):
        self.name = f"fastlm {dtype}" if device == "cpu" else f"fastlm {device} {dtype}"
        self.e = Engine.from_pretrained(path, dtype=dtype, max_seq_len=2048, device=device)
        self.m, self.s = self.e.model, self.e.slots  # the executor's facts; its KV cache slots
        self.s.ensure(1)

    def prefill(self, ids):
        self.s.truncate(0, 0)
        t = time.perf_counter()
        self.s.prefill(0, ids)
        return len(ids) / (time.perf_counter() - t)

    def decode(self, n):
        self.s.prefill(0, [1])
        tok = 1
        t = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(self.s.decode([0], [tok])[0]))
        return n / (time.perf_counter() - t)


class Transformers:
    def __init__(self, path: Path):
        import torch
        import transformers

        self.torch = torch
        torch.set_num_threads(get_num_threads())
        self.name = "transformers fp32"
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                       dtype=torch.float32).eval()

    def prefill(self, ids):
        with self.torch.no_grad():
            t = time.perf_counter()
            self.model(self.torch.tensor([ids]), use_cache=True)
            return len(ids) / (time.perf_counter() - t)

    def decode(self, n):
        torch = self.torch
        with torch.no_grad():
            out = self.model(torch.tensor([[1]]), use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            for _ in range(n):
                out = self.model(tok, past_key_values=past, use_cache=True)
                past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            return n / (time.perf_counter() - t)


class LlamaCpp:
    def __init__(self, path: Path, kind: str):
        import llama_cpp

        self.name = f"llama.cpp {kind}"
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_batch=512, n_ubatch=512,
                                   n_threads=get_num_threads(), n_threads_batch=get_num_threads(), verbose=False)

    def prefill(self, ids):
        self.llm.reset()
        t = time.perf_counter()
        self.llm.eval(ids)
        return len(ids) / (time.perf_counter() - t)

    def decode(self, n):
        self.llm.reset()
        self.llm.eval([1])
        t = time.perf_counter()
        for _ in range(n):
            self.llm.eval([int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))])
        return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--json", default=None)
    p.add_argument("--skip", nargs="*", default=[], help="engine names to leave out (transformers, llama.cpp)")
    args = p.parse_args()
    q41 = resolve(DEFAULT_MODEL)
    engines = [FastLM(q41, "float32"), FastLM(q41, "bfloat16")]
    if "transformers" not in args.skip:
        engines.append(Transformers(q41))
    if "llama.cpp" not in args.skip:
        try:
            import llama_cpp  # noqa: F401

            engines += [LlamaCpp(float_gguf(q41, "F32"), "F32"), LlamaCpp(float_gguf(q41, "F16"), "F16")]
        except ImportError:
            print("llama-cpp-python is not installed: no llama.cpp column")
    ids = np.random.default_rng(0).integers(100, 40000, size=args.prefill).tolist()
    results = {e.name: {"prefill": [], "decode": []} for e in engines}
    for e in engines:  # warm-up
        e.prefill(ids[:32]), e.decode(4)
    for r in range(args.rounds):
        for e in engines:
            results[e.name]["prefill"].append(e.prefill(ids))
            results[e.name]["decode"].append(e.decode(args.decode))
    print(f"SmolLM2-135M, {get_num_threads()} threads, {args.rounds} interleaved rounds, medians (tokens/s)")
    print(f"| engine | pp{args.prefill} | tg{args.decode} |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {statistics.median(r['prefill']):.1f} | {statistics.median(r['decode']):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
