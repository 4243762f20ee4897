"""Continuous batching: one thread owns an executor's KV cache slots and runs every call of an
Engine in flight, from any number of threads.

Each step it drops the calls that were cancelled, admits waiting calls while slots and the KV
memory budget allow (each prompt into the free slot that already holds its longest prefix),
prefills admitted prompts up to a token budget (so a long new prompt does not stall the streams
already running), and then advances every running sample by one token in one batched decode.
Calls join and leave the batch at step boundaries. A sequence computes the same bits whatever
else runs beside it: prefill chunks fall on the executor's own chunk boundaries, and decode runs
in steps of 16 rows, so greedy results equal the serial results.

>>> sched = Scheduler(Slots(engine.model))          # doctest: +SKIP
>>> sched.submit(generation)                         # doctest: +SKIP
"""
from __future__ import annotations

import collections
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from fastlm.generation import Generation
from fastlm.slots import CHUNK, Slots, prefix_mode

PREFILL_CHUNK = CHUNK  # the executor's prefill chunk (kChunk in csrc/runtime/model.cpp): same bits as one prefill
IDLE_EXIT_S = 0.5  # the thread ends after this long without work (a new call starts it again)


class QueueFull(RuntimeError):
    """The scheduler's queue of waiting calls is full (HTTP 429)."""


def default_kv_budget() -> int:
    """Half of the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def check_limits(**limits) -> None:
    """The scheduler's size arguments, each an int in range (kv_budget_bytes may be None)."""
    lows = {"max_slots": 1, "max_queue": 0, "prefill_tokens": 1, "kv_budget_bytes": 1}
    for name, v in limits.items():
        if name == "kv_budget_bytes" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lows[name]:
            raise ValueError(f"{name} must be an int >= {lows[name]}, got {v!r}")
    if limits.get("max_slots", 1) > 4096:
        raise ValueError(f"max_slots must be at most 4096 (the executor's slots), got {limits['max_slots']}")


@dataclass
class _Call:
    """An admitted call and its slots: prompt j goes to slots[j][0] (its first cached[j] tokens are
    there already), then is copied to slots[j][1:] (its other samples). While its prompts are
    computed, j and done_to say how far."""

    gen: Generation
    slots: list[list[int]]
    cached: list[int]
    j: int = 0      # the prompt being computed
    done_to: int = -1  # its tokens computed so far (-1: not begun)


@dataclass
class Stats:
    """Counters for /metrics (totals since the scheduler was made), and recent samples."""

    requests: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    first_tokens: int = 0  # calls that chose their first tokens
    ttft_sum_s: float = 0.0  # their times to first token, summed
    ttft_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))
    # steps begun between a cancel (a closed stream, a client gone) and its slots being free
    cancel_steps: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))
    _progress: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096), repr=False)

    def first_token(self, seconds: float) -> None:
        self.first_tokens += 1
        self.ttft_sum_s += seconds
        self.ttft_s.append(seconds)

    def step_done(self) -> None:
        self._progress.append((time.monotonic(), self.generated_tokens))

    def tokens_per_s(self, window_s: float = 10.0) -> float:
        """Tokens generated per second over about the last window_s seconds (falls to 0 when idle)."""
        if not self._progress:
            return 0.0
        now = time.monotonic()
        ref = self._progress[0]
        for t, n in self._progress:  # the last step at least window_s ago, else the first one
            if now - t < window_s:
                break
            ref = (t, n)
        span = now - ref[0]
        return (self._progress[-1][1] - ref[1]) / span if span > 0 else 0.0


class Scheduler:
    """Runs the calls of one Engine together over its KV cache slots.

    max_slots: sequences decoded at once (each sample of each running call holds one; a call that
    needs more, up to the executor's 4096, runs alone);
    max_queue: calls waiting for slots beyond that (more raise QueueFull); prefill_tokens: prompt tokens
    computed per step while other calls decode (rounded to PREFILL_CHUNK); kv_budget_bytes: KV cache
    memory the running calls may fill (each reserves its prompts plus their most new tokens);
    prefix_cache: a prompt starting with tokens a free slot holds computes only the rest, as
    Slots.reusable() says: "exact" (or True, the default) reuses whole prefill chunks only, which
    hold the same bits a cold prefill computes, so results are the same whatever the order of
    arrival; "all" reuses every cached token (the next turn of a chat computes only the new
    message), but positions computed in other chunks or by decode may differ in the last bits and
    a greedy result may then depend on what ran before; "off" (False) computes every prompt whole."""

    def __init__(self, slots: Slots, *, max_slots: int = 16, max_queue: int = 256,
                 prefill_tokens: int = PREFILL_CHUNK, kv_budget_bytes: int | None = None,
                 prefix_cache: bool | str = "exact"):
        check_limits(max_slots=max_slots, max_queue=max_queue, prefill_tokens=prefill_tokens,
                     kv_budget_bytes=kv_budget_bytes)
        self.slots = slots
        self.max_slots = max_slots
        self.max_queue = max_queue
        self.prefill_tokens = max(PREFILL_CHUNK, prefill_tokens // PREFILL_CHUNK * PREFILL_CHUNK)
        self.kv_bytes_per_position = slots.model.kv_bytes_per_slot // max(1, slots.model.max_seq)
        self.kv_budget_bytes = default_kv_budget() if kv_budget_bytes is None else int(kv_budget_bytes)
        self.prefix_cache = prefix_mode(prefix_cache)
        self.stats = Stats()
        self._cond = threading.Condition()
        self._waiting: collections.deque[Generation] = collections.deque()
        self._prefill: list[_Call] = []  # admitted, prompts being computed
        self._running: list[_Call] = []  # decoding
        self._busy: set[int] = set()  # slots held by admitted calls
        self._reserved = 0  # KV positions the admitted calls may fill
        self._holds = 0  # hold() calls waiting or holding: no new admissions
        self._held = False
        self._in_step = False
        self._thread: threading.Thread | None = None

    # ---- what callers do ----
    def submit(self, gen: Generation) -> None:
        """Queues a call; its chunks go to its sink as it runs. Raises QueueFull, or ValueError for a
        call that could never run (more KV memory than the budget)."""
        need = gen.positions * self.kv_bytes_per_position
        if need > self.kv_budget_bytes:
            raise ValueError(f"the call may fill {need / 1e6:.0f} MB of KV cache ({gen.positions} positions), more "
                             f"than the budget of {self.kv_budget_bytes / 1e6:.0f} MB: lower max_tokens or n")
        with self._cond:
            self._waiting.append(gen)
            queued = self._queued()
            if queued > self.max_queue:  # this call would wait beyond the bound
                self._waiting.pop()
                raise QueueFull(f"{queued - 1} calls are waiting for a slot already (max_queue={self.max_queue})")
            self.stats.requests += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fastlm-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _queued(self) -> int:
        """Waiting calls beyond those the free slots take at the next step (a call submitted to an
        idle scheduler is not queued: max_queue=0 still runs calls, refusing those that must wait)."""
        free = self.max_slots - len(self._busy)
        for i, gen in enumerate(self._waiting):
            if gen.n_sequences > free and free < self.max_slots:  # (with every slot free a big call runs alone)
                return len(self._waiting) - i
            free = max(0, free - gen.n_sequences)
        return 0

    def cancel(self, gen: Generation, wait: bool = True) -> None:
        """Drops a call at the next step boundary (wait: until then, unless called from the
        scheduler thread); what it generated stays in its samples, the unfinished ones end as "abort"."""
        with self._cond:
            if not gen.cancelled:
                gen.cancelled, gen.cancel_step = True, self.stats.steps
            if gen in self._waiting:
                self._waiting.remove(gen)
                self.stats.cancelled += 1
                self.stats.cancel_steps.append(0)
                gen.end()
            self._cond.notify_all()
        if wait and threading.current_thread() is not self._thread:
            gen.finished.wait()

    @contextmanager
    def hold(self) -> Iterator[Slots]:
        """The slots for one block of direct calls (Engine.logits, bench), once the calls in flight
        are done; calls submitted meanwhile wait until the block ends."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("hold() from the scheduler's own thread would wait for itself")
        with self._cond:
            self._holds += 1
            try:
                while self._held or self._in_step or self._prefill or self._running:
                    self._cond.wait()
            except BaseException:
                self._holds -= 1
                self._cond.notify_all()
                raise
            self._held = True
        try:
            yield self.slots
        finally:
            with self._cond:
                self._held = False
                self._holds -= 1
                self._cond.notify_all()

    # ---- what /metrics reads ----
    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        return len(self._busy)

    # ---- the thread ----
    def _has_work(self) -> bool:
        return bool(self._prefill or self._running or (self._waiting and not self._holds))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_work() or self._held:
                    if not self._cond.wait(IDLE_EXIT_S) and not self._has_work() and not self._held:
                        self._thread = None
                        return
                self._in_step = True
            try:
                self._step()
            except BaseException as e:  # a failure outside one call's own work ends every call in flight
                self._fail_all(e)
            finally:
                with self._cond:
                    self._in_step = False
                    self._cond.notify_all()

    def _step(self) -> None:
        self.stats.steps += 1
        self._drop_cancelled()
        self._admit()
        self._prefill_some()
        self._decode()
        self.stats.step_done()

    def _drop_cancelled(self) -> None:
        for calls in (self._prefill, self._running):
            for call in [c for c in calls if c.gen.cancelled]:
                calls.remove(call)
                self._close(call)

    def _admit(self) -> None:
        """Waiting calls, first come first served, while there are free slots and KV budget."""
        with self._cond:
            while self._waiting and not self._holds:
                gen = self._waiting[0]
                need = gen.positions
                free_slots = self.max_slots - len(self._busy)
                alone = gen.n_sequences > self.max_slots and not self._busy  # a big call runs by itself
                if (gen.n_sequences > free_slots and not alone) or \
                        (self._reserved + need) * self.kv_bytes_per_position > self.kv_budget_bytes:
                    return
                self._waiting.popleft()
                self._reserved += need
                self._prefill.append(self._place(gen))

    def _place(self, gen: Generation) -> _Call:
        self.slots.ensure(max(min(self.max_slots, len(self._busy) + gen.n_sequences), gen.n_sequences))
        plan = self.slots.plan(gen.prompts, gen.params.n, [s for s in range(len(self.slots)) if s not in self._busy],
                               reuse=self.prefix_cache)
        for group, _ in plan:
            self._busy.update(group)
        return _Call(gen, [g for g, _ in plan], [c for _, c in plan])

    def _prefill_some(self) -> None:
        """Prompt tokens of admitted calls, in order, up to the step's budget (all of them when
        nothing is decoding); a call whose prompts are done chooses its first tokens and runs."""
        budget = self.prefill_tokens if self._running else None
        while self._prefill and (budget is None or budget > 0):
            call = self._prefill[0]
            gen = call.gen
            prompt, slot = gen.prompts[call.j], call.slots[call.j][0]
            if call.done_to < 0:
                call.done_to = call.cached[call.j]
            n = min(PREFILL_CHUNK, len(prompt) - call.done_to)
            try:
                row = self.slots.prefill(slot, prompt[:call.done_to + n], keep=call.done_to)
                call.done_to += n
                if budget is not None:
                    budget -= n
                if call.done_to < len(prompt):
                    continue
                for s in call.slots[call.j][1:]:
                    self.slots.copy(slot, s)
                gen.start(call.j, call.slots[call.j], call.cached[call.j], row)
                self.stats.prompt_tokens += len(prompt) - call.cached[call.j]
                call.j, call.done_to = call.j + 1, -1
                if call.j < len(gen.prompts):
                    continue
                self._prefill.pop(0)
                gen.first()
                self.stats.first_token(gen.timings.time_to_first_token_s)
                self.stats.generated_tokens += len(gen.samples)
            except Exception as e:  # noqa: BLE001 - this call's own failure (a sampler, the prefill) ends it alone
                if self._prefill and self._prefill[0] is call:
                    self._prefill.pop(0)
                self._close(call, e)
                continue
            if gen.active:
                self._running.append(call)
            else:
                self._close(call)

    def _decode(self) -> None:
        """One token for every live sample of every running call, in one batched step."""
        if not self._running:
            return
        groups = [(call, call.gen.active) for call in self._running]
        slots = [s.slot for _, live in groups for s in live]
        tokens = [s.out[-1] for _, live in groups for s in live]
        logits = self.slots.decode(slots, tokens)
        row = 0
        for call, live in groups:
            rows = logits[row:row + len(live)]
            row += len(live)
            try:
                call.gen.advance(live, rows)
                self.stats.generated_tokens += len(live)
            except Exception as e:  # noqa: BLE001 - this call's own failure (its sampler) ends it alone
                self._running.remove(call)
                self._close(call, e)
                continue
            if not call.gen.active:
                self._running.remove(call)
                self._close(call)

    def _close(self, call: _Call, error: BaseException | None = None) -> None:
        """The call is over: its slots and KV budget are free (the slots keep their tokens for prefix reuse)."""
        gen = call.gen
        with self._cond:
            for group in call.slots:
                self._busy.difference_update(group)
            self._reserved -= gen.positions
            if error is not None:
                self.stats.failed += 1
            elif gen.cancelled:
                self.stats.cancelled += 1
            else:
                self.stats.finished += 1
            if gen.cancel_step is not None:
                self.stats.cancel_steps.append(self.stats.steps - gen.cancel_step)
        gen.end(error)

    def _fail_all(self, e: BaseException) -> None:
        for call in self._prefill + self._running:
            self._close(call, e)
        self._prefill, self._running = [], []
