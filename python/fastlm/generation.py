"""One generation call (a batch of prompts, n samples each) as the scheduler runs it: what each
sample has produced, the chunks it releases, and the Stream a caller reads them from. The
scheduler (fastlm.scheduler) owns the KV cache slots and steps every call in flight together."""
from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from fastlm import kernels
from fastlm.outputs import Choice, Chunk, Completion, Logprob, Timings, Usage
from fastlm.sampling import (
    NO_CANDIDATE,
    Detokenizer,
    SamplingParams,
    SequenceSampler,
    StopStrings,
    check_finite,
    log_softmax,
    top_logprobs,
)
from fastlm.structured import Constraint, StructuredOutputError
from fastlm.tokenizer import Tokenizer
from fastlm.tool_calls import CallFilter

_END = object()  # the last event of a call: nothing follows


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
    row: np.ndarray | None = None  # its prompt's last logits, until its first token
    matcher: object | None = None  # its llguidance matcher, when the call is constrained
    calls: CallFilter | None = None  # its tool calls held and parsed, when tools were given


class Generation:
    """One call: a batch of prompts, n samples each. The scheduler admits it, prefills its prompts,
    then gives it logits rows step by step (start, advance); the chunks each step releases go to
    `sink` (a list of Chunks per step, then an exception or _END), in order.

    tokenizer: for text and stop strings (None: ids only); eos_token_ids: the ids that end a
    sample; context: the positions a sequence may hold; source: the model's name in results;
    constraint: params.structured's checked grammar (fastlm.structured.Constraint), or None;
    tools: (format, tools) when the model may call tools: each sample's calls are parsed from its
    text (fastlm.tool_calls), and special tokens stay in the text (some formats open with one)."""

    def __init__(self, prompts: list[list[int]], params: SamplingParams, chat: bool, *, vocab: int,
                 tokenizer: Tokenizer | None, eos_token_ids: list[int], context: int, source: str,
                 sink: Callable[[object], None] | None = None, constraint: Constraint | None = None,
                 tools: tuple[str, list] | None = None):
        if params.stop and tokenizer is None:
            raise ValueError(f"stop strings need a tokenizer; {source} has none (use stop_token_ids)")
        params.check_vocab(vocab)
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids)
        self.context = context
        self.source = source
        self.prompts = prompts
        self.params = params
        self.chat = chat
        if (params.structured is None) != (constraint is None):
            raise ValueError("a constraint goes with params.structured (Engine builds it)")
        self.constraint = constraint
        self.tools = tools
        self.cached = [0] * len(prompts)
        self.timings = Timings()
        self.samples: list[_Sample] = []
        self.cancelled = False  # close(): the scheduler drops it at the next step
        self.cancel_step: int | None = None  # the scheduler's step count when it was cancelled
        self.done = False
        self.finished = threading.Event()  # set once the last event was sent
        if sink is None:
            self.events: queue.SimpleQueue | None = queue.SimpleQueue()
            sink = self.events.put
        else:
            self.events = None
        self._sink = sink
        self._t0 = time.perf_counter()
        self._t_first: float | None = None  # when the first token was chosen
        self._end_ids = list(params.stop_token_ids) + ([] if params.ignore_eos else self.eos_token_ids)
        self._eos, self._stop_ids = set(self.eos_token_ids), set(params.stop_token_ids)

    # ---- what the scheduler needs to know ----
    @property
    def n_sequences(self) -> int:
        """KV cache slots it holds while it runs."""
        return len(self.prompts) * self.params.n

    def limit(self, prompt: list[int]) -> int:
        """Most tokens a sample of `prompt` may generate (max_tokens, or what the context leaves)."""
        return min(self.params.max_tokens or self.context, self.context - len(prompt))

    @property
    def positions(self) -> int:
        """KV cache positions it may fill: every sample's prompt and its most tokens."""
        return sum((len(p) + self.limit(p)) * self.params.n for p in self.prompts)

    @property
    def active(self) -> list["_Sample"]:
        return [s for s in self.samples if s.finish is None]

    # ---- driven by the scheduler ----
    def start(self, j: int, slots: list[int], cached: int, row: np.ndarray) -> None:
        """Prompt j is in slots[0] (its first `cached` tokens were there already) and copied to the
        others (its other samples); row: the logits of its last position. Its samples begin."""
        p, prompt = self.params, self.prompts[j]
        decode = self.tokenizer.decode if self.tokenizer is not None else None
        skip = self.tools is None
        self.cached[j] = cached
        self.timings.prefill_tokens += len(prompt) - cached
        for i, s in enumerate(slots):
            rng = np.random.default_rng(None if p.seed is None else [p.seed, i])
            self.samples.append(_Sample(
                prompt_index=j, index=i, slot=s, prompt=prompt, limit=self.limit(prompt),
                sampler=SequenceSampler(p, prompt, rng, self._end_ids),
                detok=Detokenizer(lambda ids: decode(ids, skip_special_tokens=skip), prompt) if decode else None,
                stops=StopStrings(p.stop), logprobs=[] if p.logprobs is not None else None, row=row,
                matcher=self.constraint.for_sample() if self.constraint is not None else None,
                calls=CallFilter(*self.tools) if self.tools is not None and decode else None))

    def first(self) -> None:
        """Every prompt started: each sample chooses its first token from its prompt's logits."""
        rows = np.stack([s.row for s in self.samples])
        for s in self.samples:
            s.row = None
        t = self._t_first = time.perf_counter()
        self.timings.time_to_first_token_s = self.timings.prefill_s = t - self._t0
        self._choose(self.samples, rows, first=True)

    def advance(self, samples: list["_Sample"], logits: np.ndarray) -> None:
        """A decode step fed each of samples (its live samples, in order) its last token; logits[i]
        is what comes after it in samples[i]."""
        self.timings.decode_tokens += len(samples)
        self._choose(samples, logits)

    def _choose(self, samples: list["_Sample"], logits: np.ndarray, first: bool = False) -> None:
        """Each of samples chooses a token from its row of logits; the step's chunks are sent.
        Under a constraint the tokens it disallows are -inf first (logprobs stay the model's)."""
        p, c = self.params, self.constraint
        allowed = logits
        if c is not None:
            check_finite(logits)
            masks = c.first_masks(len(samples)) if first else c.take([s.matcher for s in samples])
            # in place, unless logprobs report the model's own logits (the rows are this step's alone)
            allowed = np.array(logits, dtype=np.float32, order="C") if p.logprobs is not None else logits
            kernels.apply_token_bitmask(allowed, masks)
        if p.plain_greedy:
            if c is None:
                check_finite(logits)
            toks = np.argmax(allowed, axis=1).tolist()
            if c is not None and any(allowed[i, t] == -np.inf for i, t in enumerate(toks)):
                raise ValueError(NO_CANDIDATE)
        else:
            toks = [s.sampler.choose(allowed[i], check=c is None) for i, s in enumerate(samples)]
        if c is not None:
            for s, tok in zip(samples, toks):
                if not s.matcher.consume_token(tok):
                    raise StructuredOutputError(f"structured output: token {tok} was refused by the grammar "
                                                f"({s.matcher.get_error()})")
        chunks = [self._advance(s, tok, logits[i], self._eos, self._stop_ids)
                  for i, (s, tok) in enumerate(zip(samples, toks))]
        if c is not None:
            live = [s.matcher for s in samples if s.finish is None]
            if live:
                c.prepare(live)  # the next masks, computed while the forward step runs
        self._sink(chunks)

    def end(self, error: BaseException | None = None) -> None:
        """The call is over (all samples ended, it was cancelled, or `error`); unfinished samples
        end as "abort". Its last event is sent."""
        if self.done:
            return
        if self._t_first is not None:
            self.timings.decode_s = time.perf_counter() - self._t_first
        self.done = True
        self._sink(error if error is not None else _END)
        self.finished.set()

    # ---- read by the caller ----
    def chunks(self) -> Iterator[Chunk]:
        """The chunks as the scheduler sends them (for a call made with the default sink)."""
        while True:
            item = self.events.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

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
        # a grammar that is complete and admits nothing more ends the sample after this token
        done = not ended and s.matcher is not None and s.matcher.is_stopped()
        text, hit = "", None
        if s.detok is not None:
            delta = s.detok.flush() if ended else s.detok.add(tok)
            if done:
                delta += s.detok.flush()
            text, hit = s.stops.feed(delta, check)
            if hit is None and len(s.out) >= s.limit and not ended:
                more, hit = s.stops.feed(s.detok.flush(), check)
                text += more
        if hit is not None:
            s.finish, s.stop_reason = "stop", hit
        elif ended or done:
            s.finish, s.stop_reason = "stop", (tok if tok in stop_ids else None)
        elif len(s.out) >= s.limit:
            s.finish = "length"
        if s.finish and hit is None:
            text += s.stops.finish()
        calls = None
        if s.calls is not None:
            text = s.calls.feed(text)
            if s.finish:
                text += s.calls.finish()
                calls = s.calls.calls or None
                if calls and s.finish == "stop":
                    s.finish = "tool_calls"
        return Chunk(text=text, token_id=tok, index=s.index, logprob=lp, top_logprobs=top, finish_reason=s.finish,
                     tool_calls=calls)

    def _token_text(self, tok: int) -> str:
        tk = self.tokenizer
        return tk.decode([tok]) if tk is not None else ""

    def run(self) -> list[Completion]:
        for _ in self.chunks():
            pass
        return self.completions()

    @staticmethod
    def _text_of(s: _Sample) -> str:
        if s.calls is not None and s.calls.content is not None:
            return s.calls.content  # the content before the calls
        return s.stops.released

    def completions(self) -> list[Completion]:
        out = []
        for j, prompt in enumerate(self.prompts):
            samples = [s for s in self.samples if s.prompt_index == j]
            # "abort": the stream was closed before this sample finished
            choices = [Choice(index=s.index, text=self._text_of(s), token_ids=list(s.out), finish_reason=s.finish or "abort",
                              logprobs=s.logprobs, stop_reason=s.stop_reason,
                              tool_calls=(s.calls.calls or None) if s.calls is not None else None) for s in samples]
            usage = Usage(prompt_tokens=len(prompt), completion_tokens=sum(len(s.out) for s in samples),
                          cached_tokens=self.cached[j])
            out.append(Completion(choices=choices, usage=usage, timings=self.timings, model=self.source,
                                  chat=self.chat))
        return out


class _Delivered:
    """What a stream has handed to its reader: `completion` is built from it."""

    def __init__(self, gen: Generation):
        self._gen = gen
        self._seen: dict[int, list[Chunk]] = {}  # the chunks delivered, per sample
        self._final: Completion | None = None
        self._closed = False

    def _record(self, c: Chunk) -> Chunk:
        self._seen.setdefault(c.index, []).append(c)
        return c

    @property
    def completion(self) -> Completion | None:
        """What the stream has delivered (final once it ended or was closed); None before any token."""
        if self._final is not None:
            return self._final
        if not self._seen:
            return None
        full = self._gen.completions()[0]
        choices = []
        for ch in full.choices:
            got = self._seen.get(ch.index, [])
            last = got[-1].finish_reason if got else None
            choices.append(Choice(index=ch.index, text="".join(c.text for c in got),
                                  token_ids=ch.token_ids[:len(got)], finish_reason=last or "abort",
                                  logprobs=None if ch.logprobs is None else ch.logprobs[:len(got)],
                                  stop_reason=ch.stop_reason if last else None,
                                  tool_calls=got[-1].tool_calls if last else None))
        usage = Usage(full.usage.prompt_tokens, sum(len(c.token_ids) for c in choices), full.usage.cached_tokens)
        c = Completion(choices=choices, usage=usage, timings=full.timings, model=full.model, chat=full.chat,
                       id=full.id, created=full.created)
        if self._closed:
            self._final = c
        return c


class Stream(_Delivered):
    """Chunks of one prompt's samples as they are generated; n > 1 samples interleave (chunk.index).
    Leaving the loop (break), close(), and dropping the stream stop decoding at the next step and
    free its KV cache slots; `completion` holds what the stream delivered (finish_reason "abort"
    for a sample cut short). close() may come from any thread.

    >>> for chunk in engine.stream("Once upon a time", max_tokens=32):  # doctest: +SKIP
    ...     print(chunk.text, end="", flush=True)
    """

    def __init__(self, gen: Generation, cancel: Callable[[Generation], None]):
        super().__init__(gen)
        self._cancel = cancel
        self._it = gen.chunks()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Chunk:
        if self._closed:
            raise StopIteration
        try:
            return self._record(next(self._it))
        except StopIteration:
            self._closed = True
            raise

    def close(self) -> None:
        """Stops decoding (the scheduler drops it before its next step); `completion` then holds
        what was delivered."""
        if self._closed:
            return
        self._closed = True
        if not self._gen.done:
            self._cancel(self._gen)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncStream(_Delivered):
    """A Stream for asyncio: ``async for chunk in engine.astream(...)``. Leaving the loop, aclose(),
    and cancelling the task that reads it stop decoding at the next step.

    The scheduler hands chunks to the event loop the stream was made in."""

    def __init__(self, make: Callable[[Callable[[object], None]], Generation], cancel: Callable[[Generation], None]):
        """make(sink) builds the call whose events this stream reads; cancel(gen) drops it."""
        self._loop = asyncio.get_running_loop()
        self._q: asyncio.Queue = asyncio.Queue()
        super().__init__(make(self._put))
        self._cancel = cancel
        self._buf: collections.deque[Chunk] = collections.deque()

    def _put(self, item: object) -> None:
        """The scheduler's sink: events go to the queue in the loop's thread. When the loop is gone
        (closed) nobody can read them: the call is cancelled."""
        try:
            self._loop.call_soon_threadsafe(self._q.put_nowait, item)
        except RuntimeError:  # the event loop was closed: its reader is gone
            self._gen.cancelled = True

    @property
    def generation(self) -> Generation:
        return self._gen

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> Chunk:
        while not self._buf:
            if self._closed:
                raise StopAsyncIteration
            try:
                item = await self._q.get()
            except BaseException:  # the reading task was cancelled: so is the call
                self.close()
                raise
            if item is _END:
                self._closed = True
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._closed = True
                raise item
            self._buf.extend(item)
        return self._record(self._buf.popleft())

    def close(self) -> None:
        """Stops decoding at the next step (does not wait for it)."""
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        if not self._gen.done:
            self._cancel(self._gen)

    async def aclose(self) -> None:
        self.close()

    async def result(self) -> Completion:
        """Reads the stream to its end: the whole completion."""
        async for _ in self:
            pass
        return self._gen.completions()[0]

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
