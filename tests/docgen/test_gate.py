"""PriorityGate: a cap on chunks in flight, waiting chunks admitted lowest priority value first."""
import asyncio

from app.docgen.fake_generator import FakeDocGenerator
from app.docgen.gate import PriorityGate
from tests.docgen.conftest import run_fake, write


def test_cap_priority_order_and_cancelled_waiters():
    async def main():
        gate = PriorityGate(2)
        order = []

        async def worker(name, prio, hold):
            await gate.acquire(prio)
            order.append(name)
            await hold.wait()
            gate.release()

        hold = asyncio.Event()
        tasks = [asyncio.ensure_future(worker(n, p, hold)) for n, p in
                 [("a", 5), ("b", 5), ("low", 9), ("high", -3), ("mid", 0), ("gone", -9)]]
        await asyncio.sleep(0)
        assert order == ["a", "b"] and gate.used == 2  # the cap holds
        tasks[5].cancel()  # a cancelled waiter never takes a slot
        await asyncio.sleep(0)
        hold.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert order == ["a", "b", "high", "mid", "low"] and gate.used == 0

    asyncio.run(main())


def test_resize_admits_waiters():
    async def main():
        gate = PriorityGate(1)
        await gate.acquire(0)
        waiter = asyncio.ensure_future(gate.acquire(0))
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.resize(2)
        await asyncio.sleep(0)
        assert waiter.done() and gate.used == 2

    asyncio.run(main())


def test_chunks_with_more_work_above_them_go_first(tmp_path):
    """One chunk at a time: the start of a chain (three components wait on it) before lone leaves."""
    src = ("def a(x):\n    return x\n\n\ndef b(x):\n    return a(x)\n\n\ndef c(x):\n    return b(x)\n\n\n"
           "def lone1(x):\n    return x\n\n\ndef lone2(x):\n    return x\n")
    seen = []

    class Spy(FakeDocGenerator):
        async def generate_async(self, chunk):
            seen.append(chunk.name)
            await asyncio.sleep(0)  # a real generator suspends while the engine works: others queue meanwhile
            return await super().generate_async(chunk)

    run_fake(write(tmp_path / "p", {"m.py": src}), Spy(), batch_size=1)
    assert seen[0] == "a" and seen.index("b") < seen.index("lone1") and seen[-1] == "m.py"
