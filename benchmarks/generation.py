"""The generation API's two speed claims on SmolLM2-135M-Instruct, interleaved, medians:

1. prompt reuse: time to first token of a chat turn whose ~500-token history is already in the KV
   cache, against a cold run of the same conversation (wall clock from the call to the first chunk,
   template and tokenization included);
2. batching: aggregate decode tokens/s of 8 greedy prompts decoded together against one prompt.

    python benchmarks/generation.py [--rounds 5] [--dtype float32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from fastlm import Engine

HISTORY = [
    {"role": "system", "content": "You are a helpful assistant who answers questions about European geography."},
    {"role": "user", "content": "Tell me about the rivers of France, their lengths and where they flow."},
    {"role": "assistant", "content": (
        "France has several major rivers. The Loire is the longest, at about 1,006 kilometres; it rises in the "
        "Massif Central and flows north and then west to the Atlantic Ocean at Saint-Nazaire. The Seine, about "
        "777 kilometres long, flows through Paris and reaches the English Channel at Le Havre. The Rhône rises "
        "in the Swiss Alps, passes through Lake Geneva and Lyon, and ends in the Mediterranean Sea near "
        "Marseille. The Garonne rises in the Spanish Pyrenees and flows through Toulouse and Bordeaux before "
        "joining the Dordogne to form the Gironde estuary. The Rhine forms part of the border with Germany. "
        "Smaller rivers such as the Marne, the Oise, the Moselle, the Meuse, the Saône and the Lot are "
        "important for agriculture, transport and tourism, and many canals link them into a network. The "
        "Canal du Midi, built in the seventeenth century, joins the Garonne to the Mediterranean.")},
    {"role": "user", "content": "Which of those rivers pass through large cities, and what are those cities known for?"},
    {"role": "assistant", "content": (
        "Paris lies on the Seine and is known for the Eiffel Tower, the Louvre museum, Notre-Dame cathedral and "
        "its cafés. Lyon sits where the Rhône meets the Saône; it is famous for its food, its old town and its "
        "silk industry. Bordeaux, on the Garonne, is known around the world for its wine and its elegant "
        "eighteenth-century architecture. Toulouse, also on the Garonne, is the centre of the European "
        "aerospace industry and is called the pink city for its brick buildings. Nantes, near the mouth of the "
        "Loire, was a great port and is known today for its mechanical elephant and its castle of the dukes of "
        "Brittany. Orléans and Tours on the Loire are known for their castles and gardens, and Strasbourg, on "
        "the Rhine, hosts the European Parliament and has a famous Gothic cathedral.")},
    {"role": "user", "content": "What is the capital of France?"},
]
NEXT = {"role": "user", "content": "And how many people live there?"}

PROMPTS = ["The three primary colors are", "def fibonacci(n):", "Once upon a time in a small village,",
           "The French Revolution began in", "To make a cup of tea, first", "Photosynthesis is the process",
           "The largest planet in the solar system", "In machine learning, overfitting means"]


def first_chunk_s(engine: Engine, messages: list[dict]) -> tuple[float, int]:
    t = time.perf_counter()
    stream = engine.chat_stream(messages, max_tokens=1)
    next(stream)
    dt = time.perf_counter() - t
    stream.close()
    return dt, stream.completion.usage.cached_tokens


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per prompt in the batch test")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    engine = Engine.from_pretrained(dtype=args.dtype, max_seq_len=2048)
    history_tokens = len(engine._chat_ids(HISTORY))
    cold, warm, cached = [], [], []
    single, batch, batch_e2e, single_e2e = [], [], [], []
    engine.generate(PROMPTS[0], max_tokens=8)  # warm-up
    for _ in range(args.rounds):
        # a chat turn: the previous turn's prompt and reply are in the cache
        reply = engine.chat(HISTORY, max_tokens=24).text
        msgs = HISTORY + [{"role": "assistant", "content": reply}, NEXT]
        dt, c = first_chunk_s(engine, msgs)
        warm.append(dt)
        cached.append(c)
        engine.reset()
        cold.append(first_chunk_s(engine, msgs)[0])
        # batching
        one = engine.generate(PROMPTS[0], max_tokens=args.tokens, ignore_eos=True)
        single.append(one.timings.decode_tokens_per_s)
        single_e2e.append(args.tokens / one.timings.total_s)
        eight = engine.generate(PROMPTS, max_tokens=args.tokens, ignore_eos=True)
        batch.append(eight[0].timings.decode_tokens_per_s)
        batch_e2e.append(8 * args.tokens / eight[0].timings.total_s)
    med = statistics.median
    res = {"dtype": args.dtype, "rounds": args.rounds, "history_tokens": history_tokens,
           "prompt_tokens_turn2": len(engine._chat_ids(msgs)), "cached_tokens": med(cached),
           "ttft_cold_s": med(cold), "ttft_warm_s": med(warm), "ttft_speedup": med([c / w for c, w in zip(cold, warm)]),
           "decode_single_tok_s": med(single), "decode_batch8_tok_s": med(batch),
           "batch8_speedup": med([b / s for b, s in zip(batch, single)]),
           "e2e_single_tok_s": med(single_e2e), "e2e_batch8_tok_s": med(batch_e2e)}
    print(f"SmolLM2-135M-Instruct, {args.dtype}, {args.rounds} interleaved rounds, medians")
    print(f"chat turn 2 ({res['prompt_tokens_turn2']} prompt tokens, {res['cached_tokens']:.0f} cached): "
          f"time to first token cold {1e3 * res['ttft_cold_s']:.1f} ms, warm {1e3 * res['ttft_warm_s']:.1f} ms, "
          f"{res['ttft_speedup']:.1f}x sooner")
    print(f"greedy decode, {args.tokens} tokens each: 1 prompt {res['decode_single_tok_s']:.1f} tok/s, "
          f"8 prompts {res['decode_batch8_tok_s']:.1f} tok/s aggregate ({res['batch8_speedup']:.2f}x); "
          f"with prefill: {res['e2e_single_tok_s']:.1f} vs {res['e2e_batch8_tok_s']:.1f} tok/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
