"""Decode speed of the families' extra ops: Qwen3-shaped (q/k head norms, q/k/v unfused), Gemma 2
(post norms, GeGLU, soft caps, sliding and global layers) and Gemma 3 (and q/k norms, rope per layer
type) random models against a Llama-shaped one of the same sizes and weight bytes, built with
transformers (from_config, random weights, saved in a temporary folder), decoded by fastlm in
interleaved rounds.

    python benchmarks/families.py --dtype bfloat16 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import transformers

from fastlm import Engine
from fastlm.cli import info_dict

SHAPE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=3072, num_hidden_layers=24, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128, max_position_embeddings=2048, tie_word_embeddings=False)


def build(kind: str, folder: Path, dtype: torch.dtype) -> Path:
    torch.manual_seed(0)
    cfg_class, model_class = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                              "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
                              "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
                              "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM)}[kind]
    extra = {"sliding_window": 128} if kind.startswith("gemma") else {}  # the decode runs past it
    model = model_class(cfg_class(**SHAPE, **extra)).to(dtype).eval()
    model.save_pretrained(str(folder / kind), safe_serialization=True)
    return folder / kind


def decode_rate(eng: Engine, tokens: int) -> float:
    return eng.generate([5, 6, 7, 8], max_tokens=tokens, ignore_eos=True).timings.decode_tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "int8", "int4"])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bandwidth", type=float, default=20.0, help="GB/s, for the roofline")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        save_dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
        engines = {k: Engine.from_pretrained(build(k, Path(tmp), save_dtype), dtype=a.dtype, max_seq_len=256)
                   for k in ("llama", "qwen3", "gemma2", "gemma3")}
        for e in engines.values():
            decode_rate(e, 4)
        rates: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(a.rounds):
            for k, e in engines.items():
                rates[k].append(decode_rate(e, a.tokens))
    c = info_dict()["cpu"]
    print(f"CPU: {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores; dtype {a.dtype}; "
          f"{a.rounds} interleaved rounds of {a.tokens} tokens; medians")
    print(f"| shape | weight MB | roofline at {a.bandwidth:g} GB/s | decode tok/s | vs llama |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(rates["llama"])
    for k, e in engines.items():
        wb = e.slots.model.weight_bytes
        m = statistics.median(rates[k])
        print(f"| {k} | {wb / 1e6:.0f} | {a.bandwidth * 1e9 / wb:.1f} | {m:.2f} | {m / base:.3f} |")


if __name__ == "__main__":
    main()
