"""Continuous batching (fastlm.scheduler) on the real SmolLM2: calls from many threads and asyncio
tasks run together and give exactly what they give alone; cancelling frees the slots; the queue
and the KV budget refuse clearly."""
from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from fastlm import Engine
from fastlm.hub import DEFAULT_MODEL, resolve
from fastlm.scheduler import QueueFull

pytestmark = pytest.mark.slow

# short and long prompts: the 600-token one is prefilled in chunks while the others decode
PROMPTS = [f"Story number {i}: once upon a time" for i in range(10)] + ["Tell me about Paris.",
                                                                        "A long one: " + "again and " * 300]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=1024, max_slots=8, prefix_cache=False)


@pytest.fixture(scope="module")
def serial(engine):
    return [engine.generate(p, max_tokens=12, ignore_eos=True).token_ids for p in PROMPTS]


def idle(engine, timeout=30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if engine.scheduler.busy_slots == 0 and engine.scheduler.queue_depth == 0:
            return True
        time.sleep(0.01)
    return False


def test_threads_in_any_order_equal_the_serial_results(engine, serial):
    """More callers than slots, arriving at random moments: queued, batched, and bit-identical."""
    results, errors = {}, []

    def worker(i):
        try:
            time.sleep(random.Random(i).random() * 0.2)
            results[i] = engine.generate(PROMPTS[i % len(PROMPTS)], max_tokens=12, ignore_eos=True).token_ids
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2 * len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert all(results[i] == serial[i % len(PROMPTS)] for i in range(2 * len(PROMPTS)))
    assert engine.scheduler.stats.steps > 0 and idle(engine)


def test_samples_of_a_batch_and_n_equal_the_serial_results(engine, serial):
    got = engine.generate(PROMPTS[:3], max_tokens=12, ignore_eos=True, n=2)
    assert [c.token_ids for g in got for c in g.choices] == [t for t in serial[:3] for _ in range(2)]


def test_a_closed_stream_frees_its_slot_at_the_next_step(engine):
    stream = engine.stream(PROMPTS[0], max_tokens=500, ignore_eos=True)
    next(stream)
    stream.close()  # returns once the scheduler dropped it
    assert engine.scheduler.busy_slots == 0
    assert stream.completion.finish_reason == "abort" and len(stream.completion.token_ids) == 1


def test_a_dropped_stream_is_cancelled(engine):
    stream = engine.stream(PROMPTS[1], max_tokens=500, ignore_eos=True)
    next(stream)
    del stream
    assert idle(engine)


def test_a_stream_left_open_does_not_block_other_calls(engine, serial):
    stream = engine.stream(PROMPTS[2], max_tokens=12, ignore_eos=True)
    assert engine.generate(PROMPTS[3], max_tokens=12, ignore_eos=True).token_ids == serial[3]
    assert [c.token_id for c in stream] == serial[2]


def test_the_queue_is_bounded():
    eng = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=256, max_slots=1, max_queue=1)
    running = eng.stream("a", max_tokens=200, ignore_eos=True)
    next(running)  # holds the one slot
    waiting = eng.stream("b", max_tokens=2)  # queued
    with pytest.raises(QueueFull, match="max_queue=1"):
        eng.generate("c", max_tokens=2)
    running.close()
    assert len(list(waiting)) >= 1
    none = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=256, max_slots=1, max_queue=0)
    assert none.generate("a", max_tokens=2).usage.completion_tokens == 2  # a free slot: not queued
    running = none.stream("a", max_tokens=200, ignore_eos=True)
    next(running)
    with pytest.raises(QueueFull, match="0 calls are waiting.*max_queue=0"):
        none.generate("b", max_tokens=2)  # it would have to wait
    running.close()
    assert none.generate("b", max_tokens=2).usage.completion_tokens == 2


def test_the_kv_budget_refuses_a_call_that_cannot_fit():
    eng = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=1024, kv_budget_bytes=10_000_000)
    with pytest.raises(ValueError, match="KV cache.*budget of 10 MB"):
        eng.generate("hello", max_tokens=1000)
    assert eng.generate("hello", max_tokens=3).usage.completion_tokens == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 5000])
def test_scheduler_sizes_are_checked_before_loading(bad):
    with pytest.raises(ValueError, match="max_slots"):
        Engine.from_pretrained("/nonexistent", max_slots=bad)


def test_hold_waits_for_the_calls_in_flight(engine, serial):
    stream = engine.stream(PROMPTS[4], max_tokens=12, ignore_eos=True)
    done = []
    t = threading.Thread(target=lambda: done.append([c.token_id for c in stream]))
    t.start()
    logits = engine.logits([1, 2, 3])  # runs between the stream's steps once it ended, never inside them
    t.join(60)
    assert done == [serial[4]] and logits.shape == (3, engine.vocab_size)


def test_asyncio_calls_run_together_and_equal_the_serial_results(engine, serial):
    async def main():
        return await asyncio.gather(*[engine.agenerate(p, max_tokens=12, ignore_eos=True) for p in PROMPTS])

    got = asyncio.run(main())
    assert [c.token_ids for c in got] == serial


def test_asyncio_stream_break_and_task_cancellation_free_the_slots(engine, serial):
    async def main():
        toks = []
        async for c in engine.astream(PROMPTS[5], max_tokens=12, ignore_eos=True):
            toks.append(c.token_id)
        assert toks == serial[5]
        stream = engine.astream(PROMPTS[6], max_tokens=500, ignore_eos=True)
        async for _ in stream:
            break
        await stream.aclose()

        async def reader():
            async for _ in engine.astream(PROMPTS[7], max_tokens=500, ignore_eos=True):
                pass
        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert idle(engine)


def test_achat_uses_the_chat_template(engine):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    want = engine.chat(msgs, max_tokens=8)
    got = asyncio.run(engine.achat(msgs, max_tokens=8))
    assert got.token_ids == want.token_ids and got.chat
