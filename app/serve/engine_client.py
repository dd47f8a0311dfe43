"""AsyncEngine: the server's asyncio face of one engine, driven by app.llm.engine_thread.

Each sample of each HTTP request is one engine request. Awaiting `run` yields its final
RequestOutput; with a progress queue it also receives (index, (token ids so far, log-probs or None))
after every step that added tokens.
Cancelling the awaiting task (client gone) aborts the engine request, which frees its KV blocks.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable

from app.engine import RequestOutput, SamplingParams
from app.llm.engine_thread import EngineThread

_ids = itertools.count()


class AsyncEngine:
    def __init__(self, make_llm: Callable[[], Any]) -> None:
        self.thread = EngineThread(make_llm, name="docgen-serve-engine")
        self.llm = self.thread.llm  # read-only use outside the engine thread: tokenizer, limits
        self.tokenizer = self.llm.tokenizer
        self.max_model_len = self.llm.max_model_len
        self.vocab_size = int(getattr(self.llm.hf_config, "vocab_size", 0) or 0) or None
        self.in_flight = 0

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(_ids)}"

    async def run(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                  progress: asyncio.Queue | None = None, index: int = 0) -> RequestOutput:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def on_done(out: Any) -> None:  # engine thread
            try:
                loop.call_soon_threadsafe(_resolve, fut, out)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        on_progress = None
        if progress is not None:
            def on_progress(ids: list[int], logprobs: list | None) -> None:  # engine thread
                try:
                    loop.call_soon_threadsafe(progress.put_nowait, (index, (ids, logprobs)))
                except RuntimeError:
                    pass

        self.in_flight += 1
        try:
            self.thread.submit(prompt_ids, params, request_id, on_done, on_progress)
            return await fut
        except asyncio.CancelledError:
            self.thread.abort(request_id)
            raise
        finally:
            self.in_flight -= 1

    async def engine_state(self) -> dict:
        """Scheduler counters and queue lengths, read between two engine steps."""
        def read(llm) -> dict:
            s = dict(llm.stats)
            s["waiting"] = len(llm.scheduler.waiting)
            s["running"] = len(llm.scheduler.running)
            return s

        return await asyncio.to_thread(self.thread.call, read, 30.0)

    def close(self) -> None:
        self.thread.close()


def _resolve(fut: asyncio.Future, out: Any) -> None:
    if fut.done():
        return
    if isinstance(out, BaseException):
        fut.set_exception(out)
    else:
        fut.set_result(out)
