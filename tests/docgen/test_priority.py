"""docgen hands the generator each chunk's critical-path priority, and gives a generator that
schedules by priority every ready chunk instead of a short first-come-first-served queue."""
import asyncio

from app.docgen.fake_generator import FakeDocGenerator
from tests.docgen.conftest import run_fake, write

CHAIN = ("def a(x):\n    return x\n\n\ndef b(x):\n    return a(x)\n\n\ndef c(x):\n    return b(x)\n\n\n"
         "def lone(x):\n    return x\n")


class Recorder(FakeDocGenerator):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[tuple[str, int, bool]] = []  # (name, priority, is a retry)
        self.running = self.peak = 0

    async def generate_async(self, chunk):
        self.seen.append((chunk.name, chunk.priority, "failed these checks" in chunk.context))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.01)  # every ready chunk gets submitted before the first finishes
            return await super().generate_async(chunk)
        finally:
            self.running -= 1


def test_chunks_carry_their_critical_path_priority_and_a_retry_goes_first_among_equals(tmp_path):
    gen = Recorder(fail_first=("b",))
    out, _ = run_fake(write(tmp_path / "p", {"m.py": CHAIN}), gen)
    assert out.report.errors == {} and out.report.retried == 1
    first = {name: prio for name, prio, retry in gen.seen if not retry}
    retry = [prio for name, prio, is_retry in gen.seen if is_retry]
    # a -> b -> c -> the module chunk: a has the longest chain above it, the module none
    assert first["a"] < first["b"] < first["c"] < first["m.py"] == 0
    assert first["lone"] == first["c"]  # only the module chunk waits on either
    assert retry == [first["b"] - 1]  # b's retry: ahead of first attempts with b's chain


class PriorityEngine(Recorder):
    """Says it runs one sequence at a time, like a tiny engine."""

    max_concurrency = 1

    def __init__(self, by_priority: bool):
        super().__init__()
        if by_priority:
            self.schedules_by_priority = True


LEAVES = {"m.py": "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(8))}


def test_a_priority_scheduling_generator_gets_every_ready_chunk(tmp_path):
    gen = PriorityEngine(by_priority=True)
    out, _ = run_fake(write(tmp_path / "p", LEAVES), gen)
    assert out.report.generated == 9 and gen.peak == 8  # all 8 leaves at once: its queue orders them


def test_a_first_come_first_served_generator_gets_a_short_queue(tmp_path):
    gen = PriorityEngine(by_priority=False)
    out, _ = run_fake(write(tmp_path / "p", LEAVES), gen)
    assert out.report.generated == 9 and gen.peak == 2  # 2 x max_concurrency: the gate keeps the order
