"""One generation call over the executor: KV cache slots chosen for prompt reuse, prefill, then
every live sample decoded together, one batched forward step per token.

The engine keeps a mirror of the token ids whose keys and values each slot holds, so a prompt that
starts with tokens already cached (the next turn of a chat) computes only its new suffix.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from fastlm.outputs import Choice, Chunk, Completion, Logprob, Timings, Usage
from fastlm.sampling import (
    Detokenizer,
    SamplingParams,
    SequenceSampler,
    StopStrings,
    log_softmax,
    top_logprobs,
)

if TYPE_CHECKING:
    from fastlm.engine import Engine


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


@dataclass
class _Sample:
    """One sample (choice) of one prompt while it decodes."""

    prompt_index: int
    index: int
    slot: int
    prompt: list[int]
    limit: int  # most tokens it may generate (max_tokens, or what the context leaves)
    sampler: SequenceSampler
    detok: Detokenizer | None
    stops: StopStrings
    out: list[int] = field(default_factory=list)
    logprobs: list[Logprob] | None = None
    finish: str | None = None
    stop_reason: str | int | None = None


class Generation:
    """Decodes a batch of prompts, n samples each; iterate chunks() or call run()."""

    def __init__(self, engine: "Engine", prompts: list[list[int]], params: SamplingParams, chat: bool):
        if params.stop and engine.tokenizer is None:
            raise ValueError(f"stop strings need a tokenizer; {engine.source} has none (use stop_token_ids)")
        params.check_vocab(engine.vocab_size)
        self.engine = engine
        self.prompts = prompts
        self.params = params
        self.chat = chat
        self.cached = [0] * len(prompts)
        self.timings = Timings()
        self.samples: list[_Sample] = []
        self.stale = False  # another call on the engine took over its KV cache slots
        self.done = False

    # ---- slots ----
    def _assign_slots(self) -> list[tuple[int, int, list[int]]]:
        """For each prompt: (slot, cached prefix length, slots of its other samples)."""
        eng, m = self.engine, self.engine.model
        m.ensure_slots(len(self.prompts) * self.params.n)
        cache = eng._slot_tokens
        while len(cache) < m.n_slots:
            cache.append([])
        for s in range(m.n_slots):  # distrust a mirror that the executor contradicts
            if m.slot_len(s) != len(cache[s]):
                m.truncate_slot(s, 0)
                cache[s] = []
        free = list(range(m.n_slots))
        plan = []
        for p in self.prompts:
            best = max(free, key=lambda s: (common_prefix(cache[s], p), -s))
            free.remove(best)
            free.sort(key=lambda s: (len(cache[s]), s))  # copies go where the least is lost
            copies, free = free[:self.params.n - 1], free[self.params.n - 1:]
            plan.append((best, min(common_prefix(cache[best], p), len(p) - 1), copies))
        return plan

    # ---- the run ----
    def chunks(self) -> Iterator[Chunk]:
        eng, m, p = self.engine, self.engine.model, self.params
        cache = eng._slot_tokens
        t0 = time.perf_counter()
        plan = self._assign_slots()
        B = len(self.prompts) * p.n
        logits = np.empty((B, m.vocab), np.float32)
        end_ids = list(p.stop_token_ids) + ([] if p.ignore_eos else list(eng.eos_token_ids))
        decode = eng.tokenizer.decode if eng.tokenizer is not None else None
        computed = 0
        for j, (prompt, (slot, cached, copies)) in enumerate(zip(self.prompts, plan)):
            m.truncate_slot(slot, cached)
            del cache[slot][cached:]
            row = m.prefill(slot, np.asarray(prompt[cached:], dtype=np.int32))[0]
            cache[slot][:] = prompt
            computed += len(prompt) - cached
            self.cached[j] = cached
            for i, s in enumerate([slot] + copies):
                if s != slot:
                    m.copy_slot(slot, s, len(prompt))
                    cache[s] = list(prompt)
                seed = None if p.seed is None else [p.seed, i]
                rng = np.random.default_rng(seed)
                self.samples.append(_Sample(
                    prompt_index=j, index=i, slot=s, prompt=prompt,
                    limit=min(p.max_tokens or eng.context_length, eng.context_length - len(prompt)),
                    sampler=SequenceSampler(p, prompt, rng, end_ids),
                    detok=Detokenizer(lambda ids: decode(ids, skip_special_tokens=True), prompt) if decode else None,
                    stops=StopStrings(p.stop), logprobs=[] if p.logprobs is not None else None))
                logits[len(self.samples) - 1] = row
        self.timings.prefill_tokens = computed
        eos, stop_ids = set(eng.eos_token_ids), set(p.stop_token_ids)
        # `logits` row i belongs to sample active[i]: the decode step's own output, never copied
        active = list(range(B))
        t_first = None
        while active:
            if p.plain_greedy:
                toks = np.argmax(logits, axis=1).tolist()
            else:
                toks = [self.samples[b].sampler.choose(logits[i]) for i, b in enumerate(active)]
            if t_first is None:
                t_first = time.perf_counter()
                self.timings.time_to_first_token_s = self.timings.prefill_s = t_first - t0
            for i, (b, tok) in enumerate(zip(active, toks)):
                yield self._advance(self.samples[b], tok, logits[i], eos, stop_ids)
                if self.stale:
                    raise RuntimeError("this generation was interrupted: another call on the same Engine "
                                       "took over its KV cache")
            active = [b for b in active if self.samples[b].finish is None]
            if active:
                slots = np.asarray([self.samples[b].slot for b in active], np.int64)
                fed = [self.samples[b].out[-1] for b in active]
                logits = m.decode(slots, np.asarray(fed, np.int32))
                for b, tok in zip(active, fed):
                    cache[self.samples[b].slot].append(tok)
                self.timings.decode_tokens += len(active)
        self.timings.decode_s = time.perf_counter() - (t_first or t0)
        self.done = True

    def _advance(self, s: _Sample, tok: int, row: np.ndarray, eos: set, stop_ids: set) -> Chunk:
        p = self.params
        s.out.append(tok)
        lp = top = None
        if s.logprobs is not None:
            ls = log_softmax(row)
            lp = float(ls[tok])
            top = [(t, self._token_text(t), v) for t, v in top_logprobs(ls, p.logprobs)]
            s.logprobs.append(Logprob(tok, self._token_text(tok), lp, top))
        check = len(s.out) >= p.min_tokens
        ended = check and ((tok in eos and not p.ignore_eos) or tok in stop_ids)
        text, hit = "", None
        if s.detok is not None:
            delta = s.detok.flush() if ended else s.detok.add(tok)
            text, hit = s.stops.feed(delta, check)
            if hit is None and len(s.out) >= s.limit and not ended:
                more, hit = s.stops.feed(s.detok.flush(), check)
                text += more
        if hit is not None:
            s.finish, s.stop_reason = "stop", hit
        elif ended:
            s.finish, s.stop_reason = "stop", (tok if tok in stop_ids else None)
        elif len(s.out) >= s.limit:
            s.finish = "length"
        if s.finish and hit is None:
            text += s.stops.finish()
        return Chunk(text=text, token_id=tok, index=s.index, logprob=lp, top_logprobs=top, finish_reason=s.finish)

    def _token_text(self, tok: int) -> str:
        tk = self.engine.tokenizer
        return tk.decode([tok]) if tk is not None else ""

    def run(self) -> list[Completion]:
        for _ in self.chunks():
            pass
        return self.completions()

    def completions(self) -> list[Completion]:
        out = []
        for j, prompt in enumerate(self.prompts):
            samples = [s for s in self.samples if s.prompt_index == j]
            # "abort": the stream was closed before this sample finished
            choices = [Choice(index=s.index, text=s.stops.released, token_ids=list(s.out), finish_reason=s.finish or "abort",
                              logprobs=s.logprobs, stop_reason=s.stop_reason) for s in samples]
            usage = Usage(prompt_tokens=len(prompt), completion_tokens=sum(len(s.out) for s in samples),
                          cached_tokens=self.cached[j])
            out.append(Completion(choices=choices, usage=usage, timings=self.timings, model=self.engine.source,
                                  chat=self.chat))
        return out


class Stream:
    """Chunks of one prompt's samples as they are generated. Leaving the loop (break) and close()
    stop decoding; after the last chunk, `completion` holds the whole result.

    >>> for chunk in engine.stream("Once upon a time", max_tokens=32):  # doctest: +SKIP
    ...     print(chunk.text, end="", flush=True)
    """

    def __init__(self, gen: Generation):
        self._gen = gen
        self._it = gen.chunks()
        self.completion: Completion | None = None

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Chunk:
        try:
            return next(self._it)
        except StopIteration:
            if self.completion is None:
                self.completion = self._gen.completions()[0]
            raise

    def close(self) -> None:
        """Stops decoding; `completion` then holds what was generated so far."""
        self._it.close()
        if self.completion is None and self._gen.samples:
            self.completion = self._gen.completions()[0]

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
