"""One generation call over the KV cache slots (fastlm.slots): slots chosen for prompt reuse,
prefill, then every live sample decoded together, one batched forward step per token."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from fastlm.outputs import Choice, Chunk, Completion, Logprob, Timings, Usage
from fastlm.sampling import (
    Detokenizer,
    SamplingParams,
    SequenceSampler,
    StopStrings,
    check_finite,
    log_softmax,
    top_logprobs,
)
from fastlm.slots import Slots
from fastlm.tokenizer import Tokenizer


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
    """Decodes a batch of prompts, n samples each; iterate chunks() or call run().

    slots: the KV cache (claimed for this call); tokenizer: for text and stop strings (None: ids
    only); eos_token_ids: the ids that end a sample; context: the positions a sequence may hold;
    source: the model's name in results."""

    def __init__(self, slots: Slots, prompts: list[list[int]], params: SamplingParams, chat: bool, *,
                 tokenizer: Tokenizer | None, eos_token_ids: list[int], context: int, source: str):
        if params.stop and tokenizer is None:
            raise ValueError(f"stop strings need a tokenizer; {source} has none (use stop_token_ids)")
        params.check_vocab(slots.model.vocab)
        self.slots = slots
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids)
        self.context = context
        self.source = source
        self.prompts = prompts
        self.params = params
        self.chat = chat
        self.cached = [0] * len(prompts)
        self.timings = Timings()
        self.samples: list[_Sample] = []
        self.stale = False  # another call (of this thread) took over the KV cache slots
        self.cancelled = False  # close() from another thread: stop at the next step
        self._t_first: float | None = None  # when the first token was chosen
        self.done = False
        slots.claim(self)  # calls from other threads wait until this one is done

    def finish(self) -> None:
        """Done (ended, closed or interrupted): the timings are closed and the slots go to the next caller."""
        if not self.done and self._t_first is not None:
            self.timings.decode_s = time.perf_counter() - self._t_first
        self.done = True
        self.slots.release(self)

    # ---- the run ----
    def chunks(self) -> Iterator[Chunk]:
        try:
            yield from self._chunks()
        finally:
            self.finish()

    def _chunks(self) -> Iterator[Chunk]:
        slots, p = self.slots, self.params
        t0 = time.perf_counter()
        plan = slots.plan(self.prompts, p.n)
        B = len(self.prompts) * p.n
        logits = np.empty((B, slots.model.vocab), np.float32)
        end_ids = list(p.stop_token_ids) + ([] if p.ignore_eos else self.eos_token_ids)
        decode = self.tokenizer.decode if self.tokenizer is not None else None
        computed = 0
        for j, (prompt, (slot, cached, copies)) in enumerate(zip(self.prompts, plan)):
            row = slots.prefill(slot, prompt, keep=cached)
            computed += len(prompt) - cached
            self.cached[j] = cached
            for i, s in enumerate([slot] + copies):
                if s != slot:
                    slots.copy(slot, s)
                seed = None if p.seed is None else [p.seed, i]
                rng = np.random.default_rng(seed)
                self.samples.append(_Sample(
                    prompt_index=j, index=i, slot=s, prompt=prompt,
                    limit=min(p.max_tokens or self.context, self.context - len(prompt)),
                    sampler=SequenceSampler(p, prompt, rng, end_ids),
                    detok=Detokenizer(lambda ids: decode(ids, skip_special_tokens=True), prompt) if decode else None,
                    stops=StopStrings(p.stop), logprobs=[] if p.logprobs is not None else None))
                logits[len(self.samples) - 1] = row
        self.timings.prefill_tokens = computed
        eos, stop_ids = set(self.eos_token_ids), set(p.stop_token_ids)
        # `logits` row i belongs to sample active[i]: the decode step's own output, never copied
        active = list(range(B))
        t_first = None
        while active:
            if p.plain_greedy:
                check_finite(logits)
                toks = np.argmax(logits, axis=1).tolist()
            else:
                toks = [self.samples[b].sampler.choose(logits[i]) for i, b in enumerate(active)]
            if t_first is None:
                t_first = self._t_first = time.perf_counter()
                self.timings.time_to_first_token_s = self.timings.prefill_s = t_first - t0
            for i, (b, tok) in enumerate(zip(active, toks)):
                yield self._advance(self.samples[b], tok, logits[i], eos, stop_ids)
                if self.stale:
                    raise RuntimeError("this generation was interrupted: another call on the same Engine "
                                       "took over its KV cache")
            active = [b for b in active if self.samples[b].finish is None]
            if self.cancelled:
                break  # the unfinished samples end as "abort"
            if active:
                logits = slots.decode([self.samples[b].slot for b in active], [self.samples[b].out[-1] for b in active])
                self.timings.decode_tokens += len(active)

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
        tk = self.tokenizer
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
            out.append(Completion(choices=choices, usage=usage, timings=self.timings, model=self.source,
                                  chat=self.chat))
        return out


class Stream:
    """Chunks of one prompt's samples as they are generated. Leaving the loop (break) and close()
    stop decoding; `completion` holds what was generated (finish_reason "abort" for a sample cut
    short). While a stream is open, calls on its Engine from other threads wait for it; close() may
    come from any thread.

    >>> for chunk in engine.stream("Once upon a time", max_tokens=32):  # doctest: +SKIP
    ...     print(chunk.text, end="", flush=True)
    """

    def __init__(self, gen: Generation):
        self._gen = gen
        self._it = gen.chunks()
        self._final: Completion | None = None

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Chunk:
        return next(self._it)

    @property
    def completion(self) -> Completion | None:
        """The result so far (final once the stream ended or was closed); None before any token."""
        if self._final is not None:
            return self._final
        if not self._gen.samples:
            return None
        c = self._gen.completions()[0]
        if self._gen.done:
            self._final = c
        return c

    def close(self) -> None:
        """Stops decoding; `completion` then holds what was generated so far."""
        self._gen.cancelled = True
        if self._it.gi_running:
            return  # another thread is inside a step: it sees `cancelled` there, stops and gives the slots back
        try:
            self._it.close()
        except ValueError:  # the other thread entered its step just now: `cancelled` stops it, as above
            return
        self._gen.finish()  # a stream never iterated holds the slots too

    def __del__(self) -> None:
        if not self._gen.done:
            self.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
