"""EngineThread: one background thread that owns an `app.engine.LLM` and drives its step loop.

The engine is not thread-safe, so exactly one thread touches it. Callers (coroutines on any event
loop, or plain threads) talk to it only through a queue of commands:

- `submit(prompt, params, request_id, on_done)`: the request joins the engine's continuous batch
  at the next step, whoever submitted it; `on_done(RequestOutput | Exception)` is called in the
  engine thread when it finishes (the caller hops back to its own loop with call_soon_threadsafe).
  With `on_progress(token_ids, logprobs)`, it is also called in the engine thread after every step that
  added tokens to the request (the output tokens so far, and their log-probs or None), for streaming.
- `abort(request_id)`: the engine frees the request's KV blocks; `on_done` is not called.
- `call(fn)`: runs `fn(llm)` between two steps and returns its result (stats, reports).
- `close()`: fails what is still pending with a clear error and joins the thread.
"""
from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

OnDone = Callable[[Any], None]  # receives a RequestOutput, or the Exception that ended the request
OnProgress = Callable[[list, Any], None]  # receives the output token ids so far and their log-probs


class EngineClosedError(RuntimeError):
    pass


class EngineThread:
    """`llm` is an engine, or a zero-argument factory that builds one.

    Pass a factory where possible: the engine is then built in the thread that runs it, so every
    torch op happens in one thread. On the CPU that matters: once a second thread has its own
    OpenMP team, libgomp throttles its workers' spinning (more threads than cores) and each small
    decode op pays a futex wake-up; measured 1.7x slower decode when the model was built in the
    caller's thread and run in this one.
    """

    def __init__(self, llm: Any, name: str = "docgen-engine") -> None:
        self._commands: queue.Queue = queue.Queue()
        self._pending: dict[str, OnDone] = {}  # request id -> callback; engine thread only
        self._progress: dict[str, tuple[OnProgress, int]] = {}  # request id -> (callback, tokens seen)
        self._stopping = threading.Event()
        factory = llm if callable(llm) and not hasattr(llm, "step") else (lambda: llm)
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(factory, ready), name=name, daemon=True)
        self._thread.start()
        self.llm = ready.result()  # re-raises what the factory raised (the thread has then ended)

    def _main(self, factory: Callable[[], Any], ready: concurrent.futures.Future) -> None:
        try:
            llm = factory()
        except BaseException as e:
            ready.set_exception(e)
            return
        self.llm = llm
        ready.set_result(llm)
        self._run()

    # ----- called from any thread ---------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, prompt: str | list[int], params: Any, request_id: str, on_done: OnDone,
               on_progress: OnProgress | None = None, priority: int = 0) -> None:
        """`priority`: the engine admits lower values first (LLM.add_request)."""
        if self._stopping.is_set():
            raise EngineClosedError("the generator is closed; create a new one")
        self._commands.put(("add", request_id, prompt, params, on_done, on_progress, priority))

    def abort(self, request_id: str) -> None:
        if not self._stopping.is_set():
            self._commands.put(("abort", request_id))

    def call(self, fn: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """Run `fn(llm)` in the engine thread (between steps) and return its result."""
        if not self.alive:  # nobody else touches the engine any more: safe to run here
            return fn(self.llm)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put(("call", fn, fut))
        return fut.result(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            self._commands.put(("stop",))
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("engine thread did not stop within %.0f s (a long model step?)", timeout)

    # ----- the engine thread --------------------------------------------------------------
    def _run(self) -> None:
        llm = self.llm
        while True:
            # Idle: sleep on the queue. Busy: only pick up what has arrived, then step.
            idle = not llm.has_unfinished()
            try:
                cmd = self._commands.get(block=idle)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                if cmd[0] == "stop":
                    self._shutdown()
                    return
                self._handle(cmd)
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            if llm.has_unfinished():
                self._step()

    def _handle(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "add":
            _, rid, prompt, params, on_done, on_progress, priority = cmd
            try:
                extra = {"priority": priority} if priority else {}  # an engine without priorities takes plain requests
                self.llm.add_request(prompt, params, rid, **extra)
            except Exception as e:  # e.g. a duplicate id: that request fails, the engine goes on
                _notify(on_done, e)
                return
            self._pending[rid] = on_done
            if on_progress is not None:
                self._progress[rid] = (on_progress, 0)
        elif kind == "abort":
            self._progress.pop(cmd[1], None)
            if self._pending.pop(cmd[1], None) is not None:
                self.llm.abort(cmd[1])
        elif kind == "call":
            _, fn, fut = cmd
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self.llm))
                except Exception as e:
                    fut.set_exception(e)

    def _step(self) -> None:
        try:
            outs = self.llm.step()
        except Exception as e:  # an engine bug: fail what is in flight rather than hang callers
            log.exception("engine step failed; failing %d in-flight requests", len(self._pending))
            for rid, on_done in list(self._pending.items()):
                try:
                    self.llm.abort(rid)
                except Exception:
                    pass
                _notify(on_done, RuntimeError(f"engine step failed: {type(e).__name__}: {e}"))
            self._pending.clear()
            self._progress.clear()
            return
        for out in outs:
            self._progress.pop(out.request_id, None)
            on_done = self._pending.pop(out.request_id, None)
            if on_done is not None:
                _notify(on_done, out)
        self._report_progress()

    def _report_progress(self) -> None:
        for rid, (cb, seen) in list(self._progress.items()):
            now = self.llm.progress(rid)
            if now is not None and len(now[0]) != seen:
                self._progress[rid] = (cb, len(now[0]))
                _notify_progress(cb, now)

    def _shutdown(self) -> None:
        err = EngineClosedError("the generator was closed before this chunk finished")
        for rid, on_done in list(self._pending.items()):
            try:
                self.llm.abort(rid)
            except Exception:
                pass
            _notify(on_done, err)
        self._pending.clear()
        self._progress.clear()
        # Answer queued calls too, so no caller waits forever on a stopped thread.
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                _notify(cmd[4], err)
            elif cmd[0] == "call" and cmd[2].set_running_or_notify_cancel():
                cmd[2].set_exception(err)


def _notify_progress(cb: OnProgress, now: tuple) -> None:
    try:
        cb(*now)
    except Exception:
        log.debug("progress callback failed", exc_info=True)


def _notify(on_done: OnDone, value: Any) -> None:
    try:
        on_done(value)
    except Exception:  # a caller's callback (e.g. its event loop is closed) must not kill the engine
        log.debug("request callback failed", exc_info=True)
