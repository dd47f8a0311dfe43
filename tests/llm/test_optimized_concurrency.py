"""Many coroutines share one continuous batch; a cancelled request frees its KV blocks."""
import asyncio
import time

import pytest

from app.llm.local_client_optimized import create_optimized_local_generator

CODES = [f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(5)]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return str(tiny_checkpoint("tiny", overrides={"max_position_embeddings": 2048}))


def test_200_concurrent_calls_complete_and_share_batches(ckpt):
    g = create_optimized_local_generator(ckpt, quantization="none", max_batch_size=32, use_flash_attention=False,
                                         device="cpu", max_new_tokens=3, max_seq_length=2048)

    async def many():
        # 200 separate coroutines, each awaiting its own generate_async (not one batch call).
        tasks = [asyncio.create_task(g.generate_async(CODES[i % len(CODES)])) for i in range(200)]
        return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(many())
        stats = g.engine_stats
        reference = g.generate_batch(CODES)  # the same chunks again, in a batch of 5
    finally:
        g.close()
    assert len(results) == 200 and all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert stats["max_seqs_in_step"] > 1  # requests from different coroutines ran in the same step
    assert stats["steps"] < 200 * 3  # far fewer steps than one request at a time would take
    # Greedy output does not depend on which requests shared a batch.
    for i, r in enumerate(results):
        assert r.extra["token_ids"] == reference[i % len(CODES)].extra["token_ids"]
    assert stats["kv_free_blocks"] == stats["kv_blocks"]


def test_cancelled_request_is_aborted_and_frees_its_blocks(ckpt):
    g = create_optimized_local_generator(ckpt, quantization="none", max_batch_size=4, use_flash_attention=False,
                                         device="cpu", max_new_tokens=1000, max_seq_length=2048, ignore_eos=True)

    async def scenario():
        task = asyncio.create_task(g.generate_async(CODES[0]))
        deadline = time.monotonic() + 30
        # Wait until the request is decoding (holds KV blocks), then cancel it.
        while g.engine_stats["kv_free_blocks"] == g.engine_stats["kv_blocks"]:
            assert time.monotonic() < deadline, "the request never started"
            await asyncio.sleep(0.01)
        held = g.engine_stats["kv_blocks"] - g.engine_stats["kv_free_blocks"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while g.engine_stats["kv_free_blocks"] != g.engine_stats["kv_blocks"]:
            assert time.monotonic() < deadline, "the cancelled request's blocks were not freed"
            await asyncio.sleep(0.01)
        return held

    try:
        held = asyncio.run(scenario())
        unfinished = g._engine.call(lambda llm: llm.has_unfinished())
        steps = g.engine_stats["steps"]
    finally:
        g.close()
    assert held > 0
    assert not unfinished
    assert steps < 1000  # it stopped long before its 1000 tokens


def test_chunk_priority_orders_the_engine_queue(ckpt):
    from app.llm.types import CodeChunk

    g = create_optimized_local_generator(ckpt, quantization="none", max_batch_size=1, use_flash_attention=False,
                                         device="cpu", max_new_tokens=2, max_seq_length=2048, ignore_eos=True)
    assert g.schedules_by_priority is True
    done = []

    async def one(name, prio, limit):
        r = await g.generate_async(CodeChunk(code=CODES[0], name=name, priority=prio, max_new_tokens=limit))
        done.append(name)
        return r

    async def scenario():
        # one sequence at a time: the first (lowest priority) holds the engine while the rest queue
        first = asyncio.create_task(one("first", 9, 200))
        deadline = time.monotonic() + 30
        while g.engine_stats["kv_free_blocks"] == g.engine_stats["kv_blocks"]:
            assert time.monotonic() < deadline, "the first request never started"
            await asyncio.sleep(0.005)
        rest = await asyncio.gather(one("p3", 3, 2), one("p1", 1, 2), one("p2", 2, 2), one("p0", 0, 2),
                                    one("p1b", 1, 2))
        return [await first] + rest

    try:
        results = asyncio.run(scenario())
    finally:
        g.close()
    assert all(r.ok for r in results)
    assert done == ["first", "p0", "p1", "p1b", "p2", "p3"]  # equal priorities: first come, first served
