"""The guide's OptimizedLocalDocGenerator: the same API as LocalDocGenerator, run on app.engine.

    generator = create_optimized_local_generator("Qwen/Qwen2.5-Coder-7B-Instruct", quantization="4bit",
                                                 max_batch_size=8, enable_speculative_decoding=True)
    results = await generator.generate_batch_async(chunks)
    generator.report()["optimizations"]   # what is active, and why not

One background thread owns the engine (app.llm.engine_thread). Every `generate_async` call, from
any coroutine, becomes one engine request that joins the running continuous batch at the next
step; its asyncio future is resolved from the engine thread with call_soon_threadsafe. Cancelling
the coroutine aborts the request, which frees its KV blocks. Timings in each DocResult are
measured from the moment the chunk was submitted.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import sys
import time
import warnings
import weakref
from dataclasses import replace
from typing import Any

import torch

from app.llm.engine_thread import EngineThread
from app.engine.names import normalize_quantization, resolve_device
from app.llm.optimizations import OptimizationPlan, as_dicts
from app.llm.generator_base import LocalGeneratorBase
from app.llm.prompts import PROMPT_VERSION, prompt_ids
from app.llm.types import ChunkLike, CodeChunk, DocResult, usable_chunk

_FINISH = {"stop": "stop", "length": "length", "error": "error", "abort": "cancelled"}
_ids = itertools.count()


class OptimizedLocalDocGenerator(LocalGeneratorBase):
    """Documents code chunks with the engine: continuous batching, prefix reuse, and the rest."""

    def __init__(
        self,
        model_id: str,
        quantization: str | None = "4bit",
        max_batch_size: int = 8,
        enable_speculative_decoding: bool = False,
        draft_model_id: str | None = None,
        enable_static_cache: bool = True,
        enable_kv_cache_quantization: bool = False,
        enable_compilation: bool = False,
        use_flash_attention: bool = True,
        max_seq_length: int = 4096,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        ignore_eos: bool = False,
        device: str = "auto",
        lora_id: str | None = None,
        lora_path: str | None = None,
        kv_cache_memory_gb: float | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from app.engine import SamplingParams

        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        if not isinstance(max_seq_length, int) or max_seq_length < 2:
            raise ValueError(f"max_seq_length must be an integer >= 2, got {max_seq_length!r}")
        if lora_id and lora_path and lora_id != lora_path:
            raise ValueError("pass lora_id or lora_path, not both")
        reserved = {"max_num_seqs", "enable_prefix_caching", "quantization", "kv_cache_dtype", "enable_compilation",
                    "attention_backend", "speculative_method", "speculative_draft_model", "max_model_len"}
        clash = sorted(reserved & set(engine_kwargs))
        if clash:
            raise ValueError(f"{clash} are set from the guide's parameters (max_batch_size, enable_static_cache, "
                             "quantization, ...); pass those instead")
        self.model_id = str(model_id)
        self.max_seq_length = max_seq_length
        self.max_new_tokens = max_new_tokens
        self._params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      top_k=top_k, seed=seed, ignore_eos=ignore_eos)
        self._warned: set[str] = set()
        self._py_warn_registry: dict = {}  # warnings.warn_explicit's registry, private to this generator
        self.warnings: list[str] = []
        self._closed = False
        self.reloads = 0  # loads repeated because a feature failed after the weights were changed
        dev = resolve_device(device)
        self._plan = OptimizationPlan(
            device=dev, quantization=normalize_quantization(quantization), max_batch_size=max_batch_size,
            enable_speculative_decoding=bool(enable_speculative_decoding), draft_model_id=draft_model_id,
            enable_static_cache=bool(enable_static_cache),
            enable_kv_cache_quantization=bool(enable_kv_cache_quantization),
            enable_compilation=bool(enable_compilation), use_flash_attention=bool(use_flash_attention),
            warn=self._warn_once)
        base = dict(engine_kwargs, device=str(dev), max_model_len=max_seq_length,
                    kv_cache_memory_gb=kv_cache_memory_gb, lora_path=lora_path or lora_id)
        # The engine is built inside its own thread (see EngineThread): all torch work in one thread.
        self._engine = EngineThread(lambda: self._load(base, max_batch_size, bool(enable_static_cache)))
        llm = self._engine.llm
        if llm.max_model_len < max_seq_length:
            # The model's context window (or the KV pool) is smaller than asked: callers such as
            # docgen read max_seq_length to split long chunks, so it must tell the truth.
            self._warn_once("max_seq_length", f"max_seq_length={max_seq_length} exceeds what this model/engine "
                            f"supports; using {llm.max_model_len} tokens")
            self.max_seq_length = llm.max_model_len
        self._optimizations = self._plan.finalize(llm)
        self.max_concurrency = llm.config.max_num_seqs  # sequences the engine runs at once (docgen sizes its queue)
        self.schedules_by_priority = True  # the engine admits chunks by CodeChunk.priority (docgen: critical path first)
        self.tokenizer = llm.tokenizer.hf
        self._finalizer = weakref.finalize(self, self._engine.close)

    # ----- loading ------------------------------------------------------------------------
    def _load(self, base: dict, max_batch_size: int, static_cache: bool):
        """Build the engine. Optional features that fail are turned off by the engine itself, in
        place (listed in load_report["disabled_features"]); one whose failure spoiled the loaded
        weights comes back as UnsupportedFeature, is turned off here, and the engine is loaded
        again: at most once per feature, so this ends."""
        from app.engine import LLM
        from app.engine.errors import UnsupportedFeature

        turned_off: set[str] = set()
        while True:
            try:
                llm = LLM(self.model_id, **base, **self._plan.engine_kwargs(max_batch_size, static_cache),
                          optional_features=self._plan.optional_features())
            except UnsupportedFeature as e:
                if e.feature in turned_off:  # already off, yet named again: an engine bug, not a fallback case
                    raise
                turned_off.add(e.feature)
                self._plan.degrade(e.feature, e.reason)
                self.reloads += 1
                continue
            for feature, reason in (llm.load_report.disabled_features or {}).items():
                self._plan.degrade(feature, reason)
            return llm

    def _warn_once(self, key: str, message: str) -> None:
        """One warning per key per generator (a per-generator registry, not Python's per-line one)."""
        if key in self._warned:
            return
        self._warned.add(key)
        self.warnings.append(message)
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("app.llm"):
            frame = frame.f_back
        warnings.warn_explicit(message, UserWarning, frame.f_code.co_filename, frame.f_lineno,
                               module=frame.f_globals.get("__name__", "?"), registry=self._py_warn_registry)

    # ----- generation ---------------------------------------------------------------------
    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        """Document one chunk; concurrent calls share the engine's batch."""
        self._check_open()
        submitted = time.perf_counter()
        c, bad = usable_chunk(chunk)
        if bad is not None:
            return bad
        try:
            # Ids, not text: code containing `<|im_end|>` & co. must not become control tokens.
            prompt = prompt_ids(self.tokenizer, c)
        except Exception as e:  # a template that cannot render this chunk fails this chunk only
            return DocResult(chunk_id=c.id, finish_reason="error", error=f"{type(e).__name__}: {e}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        rid = f"doc-{next(_ids)}"

        def on_done(out: Any) -> None:  # runs in the engine thread
            try:
                loop.call_soon_threadsafe(_resolve, fut, out)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody waits for this result any more

        # A chunk's own limit (docgen's retry of a cut-off doc); the engine still stops at its window.
        params = replace(self._params, max_tokens=c.max_new_tokens) if c.max_new_tokens else self._params
        self._engine.submit(prompt, params, rid, on_done, priority=c.priority)
        try:
            out = await fut
        except asyncio.CancelledError:
            self._engine.abort(rid)  # frees its KV blocks at the engine's next command check
            raise
        except Exception as e:
            return DocResult(chunk_id=c.id, finish_reason="error", error=f"{type(e).__name__}: {e}",
                             total_time=time.perf_counter() - submitted)
        return self._to_result(c, out, submitted)

    def _to_result(self, c: CodeChunk, out: Any, submitted: float) -> DocResult:
        m = out.metrics
        now = time.perf_counter()
        total = now - submitted
        # The engine times from its own intake; shift by the time spent in our queue before it.
        lag = total - m["total_time"] if m.get("total_time") is not None else 0.0
        error = out.error
        if error and "maximum length" in error:
            error = f"{error} (max_seq_length={self.max_seq_length})"
        res = DocResult(
            chunk_id=c.id, text=out.text.strip(), prompt_tokens=len(out.prompt_token_ids),
            completion_tokens=len(out.token_ids), cached_prompt_tokens=out.num_cached_tokens,
            finish_reason=_FINISH.get(out.finish_reason or "", out.finish_reason or ""),
            queue_time=(m.get("queue_time") or 0.0) + lag,
            time_to_first_token=(m["time_to_first_token"] + lag) if m.get("time_to_first_token") is not None else 0.0,
            total_time=total, error=error)
        res.extra["token_ids"] = list(out.token_ids)
        if m.get("spec_proposed"):
            res.extra.update({k: m[k] for k in ("spec_proposed", "spec_accepted", "spec_acceptance_rate",
                                                "spec_mean_accepted_len") if k in m})
        return res

    # ----- reporting and lifetime ---------------------------------------------------------
    @property
    def engine_stats(self) -> dict[str, Any]:
        """The engine's scheduler counters (steps, max_seqs_in_step, prefix-cache hits, free KV blocks)."""
        return self._engine.call(lambda llm: dict(llm.stats))

    def report(self) -> dict[str, Any]:
        llm = self._engine.llm
        opts = as_dicts(self._optimizations)
        cfg = llm.config
        return {
            "generator": "OptimizedLocalDocGenerator",
            "model": self.model_id,
            "backend": llm.backend,
            "device": str(llm.device),
            "dtype": str(llm.dtype).replace("torch.", ""),
            "prompt_version": PROMPT_VERSION,
            "optimizations": opts,
            "active": [k for k, v in opts.items() if v["active"]],
            "inactive": {k: v["detail"] for k, v in opts.items() if not v["active"]},
            "engine": {"load_report": llm.load_report.as_dict(), "max_num_seqs": cfg.max_num_seqs,
                       "max_num_batched_tokens": cfg.max_num_batched_tokens, "block_size": cfg.block_size,
                       "max_model_len": llm.max_model_len, "attention_backend": cfg.attention_backend},
            "sampling": {"max_new_tokens": self._params.max_tokens, "temperature": self._params.temperature,
                         "ignore_eos": self._params.ignore_eos},
            "stats": self.engine_stats,
            "warnings": list(self.warnings),
            "torch_version": torch.__version__,
            "closed": self._closed,
        }

    def _release(self) -> None:
        self._engine.close()

def _resolve(fut: asyncio.Future, out: Any) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if isinstance(out, BaseException):
        fut.set_exception(out)
    else:
        fut.set_result(out)


def create_optimized_local_generator(*args: Any, **kwargs: Any) -> OptimizedLocalDocGenerator:
    """The guide's factory: `OptimizedLocalDocGenerator(...)`, same parameters. Optimizations this
    machine or engine cannot run are turned off with one warning each; `generator.report()` says
    what is active. Extra keyword arguments: top_p, top_k, seed, ignore_eos (sampling) and any
    other `app.engine.LLM` argument (dtype, max_num_batched_tokens, block_size, ...)."""
    return OptimizedLocalDocGenerator(*args, **kwargs)


# help() and IDEs show the constructor's parameters (one signature, written once, in __init__).
create_optimized_local_generator.__signature__ = inspect.signature(OptimizedLocalDocGenerator).replace(
    return_annotation=OptimizedLocalDocGenerator)
