"""Structured output on the real model (SmolLM2-135M-Instruct, its Q4_1 GGUF):

    python benchmarks/structured.py validity --schemas 200      # every output parses and validates
    python benchmarks/structured.py cost --rounds 7             # decode tokens/s and TTFT, constrained vs free

validity: schemas of varied shape (tests/schemas.py: nested objects, arrays with min/max items,
enums, bounded numbers, patterns, optional fields, anyOf), asked for in a chat turn and decoded
with structured=schema, greedy and at temperature 0.7, 16 calls at a time; each output is
json.loads'ed and checked with jsonschema.validate.

cost: one stream decoding a long JSON array under a schema against the same prompt decoding free
(ignore_eos, the same number of tokens), in interleaved rounds; and the time to first token of a
schema never seen before against a free call. Medians; the roofline is the weight bytes read per
token at the given bandwidth.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema

from fastlm import Engine, StructuredOutput
from fastlm.cli import info_dict
from fastlm.hub import DEFAULT_MODEL, resolve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from schemas import schemas  # noqa: E402


def cpu_line() -> str:
    c = info_dict()["cpu"]
    return f"CPU: {c['brand'] or c['vendor']}, {c['physical_cores']} physical cores, kernels {info_dict()['isa']}"


def ask(schema: dict) -> list[dict]:
    return [{"role": "user", "content": "Reply with a JSON object for this schema: " + json.dumps(schema)}]


def validity(eng: Engine, n: int, seed: int, max_tokens: int) -> None:
    cases = schemas(n, seed=seed)
    print(cpu_line())
    print("| setting | schemas | parse + validate | finish stop / length | tokens | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for temperature in (0.0, 0.7):
        t0 = time.perf_counter()

        def one(i):
            return eng.chat(ask(cases[i]), structured=cases[i], max_tokens=max_tokens, temperature=temperature,
                            seed=i)

        with ThreadPoolExecutor(16) as ex:
            outs = list(ex.map(one, range(n)))
        ok, reasons, tokens = 0, collections.Counter(), 0
        for schema, c in zip(cases, outs):
            ch = c.choices[0]
            reasons[ch.finish_reason] += 1
            tokens += len(ch.token_ids)
            try:
                jsonschema.validate(json.loads(ch.text), schema)
                ok += 1
            except (json.JSONDecodeError, jsonschema.ValidationError) as e:
                print(f"  invalid ({ch.finish_reason}): {ch.text[:200]!r}: {str(e)[:120]}")
        name = "greedy" if temperature == 0 else f"temperature {temperature}"
        print(f"| {name} | {n} | {ok}/{n} ({100 * ok / n:.1f}%) | {reasons['stop']} / {reasons['length']} | "
              f"{tokens} | {time.perf_counter() - t0:.1f} |")


LIST = {"type": "object", "properties": {"items": {"type": "array", "minItems": 40, "maxItems": 40, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                     "qty": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["name", "qty"], "additionalProperties": False}}}, "required": ["items"],
    "additionalProperties": False}


def cost(eng: Engine, rounds: int, tokens: int, bandwidth: float) -> None:
    q = [{"role": "user", "content": "List forty grocery items with quantities as JSON."}]
    eng.grammars.matcher(StructuredOutput(json=LIST))  # the tokenizer built once, the grammar checked
    eng.chat(q, max_tokens=8)
    rate = {"free": [], "schema": []}
    ttft = {"free": [], "new schema": []}
    for r in range(rounds):
        c = eng.chat(q, max_tokens=tokens, ignore_eos=True)
        rate["free"].append(c.timings.decode_tokens / c.timings.decode_s)
        c = eng.chat(q, structured=LIST, max_tokens=tokens)
        if c.choices[0].finish_reason != "length":
            raise SystemExit(f"the constrained output ended before {tokens} tokens: raise minItems")
        rate["schema"].append(c.timings.decode_tokens / c.timings.decode_s)
        fresh = json.loads(json.dumps(LIST))
        fresh["properties"]["items"]["items"]["properties"]["name"]["maxLength"] = 13 + r  # never seen before
        ttft["free"].append(eng.chat(q, max_tokens=1).timings.time_to_first_token_s)
        ttft["new schema"].append(eng.chat(q, structured=fresh, max_tokens=1).timings.time_to_first_token_s)
    gb = eng.model.weight_bytes / 1e9
    print(cpu_line())
    print(f"{rounds} interleaved rounds, {tokens} decoded tokens each, medians; weights {gb * 1e3:.0f} MB, "
          f"roofline {bandwidth / gb:.0f} tok/s at {bandwidth:g} GB/s")
    free, con = statistics.median(rate["free"]), statistics.median(rate["schema"])
    print("| decode | tok/s | GB/s of weights | vs free |")
    print("|---|---:|---:|---:|")
    print(f"| free | {free:.1f} | {free * gb:.1f} | 1.000 |")
    print(f"| JSON schema | {con:.1f} | {con * gb:.1f} | {con / free:.3f} |")
    paired = statistics.median(a / b for a, b in zip(rate["schema"], rate["free"]))
    print(f"median of the per-round ratios (each pair run back to back): {paired:.3f}")
    f, s = statistics.median(ttft["free"]) * 1e3, statistics.median(ttft["new schema"]) * 1e3
    print(f"TTFT: free {f:.1f} ms, a new schema {s:.1f} ms (+{s - f:.1f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("validity")
    v.add_argument("--schemas", type=int, default=200)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--max-tokens", type=int, default=800)
    c = sub.add_parser("cost")
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--tokens", type=int, default=256)
    c.add_argument("--bandwidth", type=float, default=20.0, help="GB/s, for the roofline")
    a = ap.parse_args()
    eng = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=2048, max_slots=16)
    if a.what == "validity":
        validity(eng, a.schemas, a.seed, a.max_tokens)
    else:
        cost(eng, a.rounds, a.tokens, a.bandwidth)


if __name__ == "__main__":
    main()
