"""OpenAIDocGenerator: documents chunks through any OpenAI-compatible server (ours, vLLM, SGLang,
llama.cpp's server, Ollama, hosted APIs) with the official `openai` async client.

    gen = OpenAIDocGenerator(OpenAIBackendConfig(["http://127.0.0.1:8000/v1"]))
    results = await gen.generate_batch_async(chunks)

The prompt goes out as chat messages (app.llm.prompts.build_messages); the server applies its
model's chat template, as the in-process generator does with the same messages. Requests are
spread over the endpoints (least loaded first, bounded per endpoint); timeouts, connection errors,
429 and 5xx are retried with exponential backoff; other 4xx fail that chunk only. Token counts
come from the server's `usage`. Where the first server offers vLLM's `POST /tokenize` (ours and
vLLM do), `count_tokens` / `count_prompt_tokens` use it, so docgen sizes chunks with the served
model's tokenizer, exactly as with the in-process engine; elsewhere docgen estimates from characters.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from app.llm.backends.endpoints import EndpointPool
from app.llm.prompts import PROMPT_VERSION, build_messages
from app.llm.generator_base import DocGeneratorBase
from app.llm.types import ChunkLike, DocResult, as_chunk, usable_chunk


@dataclass
class OpenAIBackendConfig:
    base_urls: list[str]
    model: str | None = None  # None: the first model the first endpoint lists
    api_key: str | None = None  # servers without auth accept any key; the client needs one
    max_concurrency: int = 16  # requests in flight per endpoint
    timeout: float = 600.0  # seconds per request
    max_retries: int = 8  # per chunk, after the first try
    backoff: float = 0.5  # first retry delay (s); doubles per retry, jittered, capped by max_backoff
    max_backoff: float = 10.0
    max_new_tokens: int = 256
    temperature: float = 0.0
    max_seq_length: int = 4096  # used when the server does not report its window
    extra_body: dict[str, Any] = field(default_factory=dict)  # server-specific fields, sent as is

    def __post_init__(self) -> None:
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        if not self.base_urls:
            raise ValueError("--backend openai needs at least one --base-url (e.g. http://127.0.0.1:8000/v1)")
        for u in self.base_urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"--base-url {u!r} must start with http:// or https:// (and usually end in /v1)")
        if self.timeout <= 0 or self.max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")


def _openai():
    try:
        import openai
    except ImportError as e:
        raise ValueError("--backend openai needs the `openai` package: pip install '.[serve]' in the docgen checkout "
                         "(or pip install openai)") from e
    return openai


class OpenAIDocGenerator(DocGeneratorBase):
    """Counts tokens only through the server's /tokenize (see the module's doc), so it is not a
    LocalGeneratorBase: without that endpoint it has no `count_tokens` and docgen estimates."""

    def __init__(self, cfg: OpenAIBackendConfig) -> None:
        self.cfg = cfg
        self._openai = _openai()
        self.pool = EndpointPool(cfg.base_urls, cfg.max_concurrency)
        self._clients: dict[str, Any] = {}
        self._loop = None
        self.max_seq_length = cfg.max_seq_length
        self.max_new_tokens = cfg.max_new_tokens  # a chunk's own CodeChunk.max_new_tokens overrides it
        self.model_id = cfg.model or self._discover_model()
        self._tokenizer_http = self._probe_tokenize()
        if self._tokenizer_http is not None:  # instance attributes: docgen looks these up with getattr
            self.count_tokens = self._count_tokens
            self.count_prompt_tokens = self._count_prompt_tokens
        self.totals = {"requests": 0, "retries": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def _discover_model(self) -> str:
        """The first model the first endpoint serves (and its window, where the server reports it)."""
        client = self._openai.OpenAI(base_url=self.cfg.base_urls[0], api_key=self.cfg.api_key or "none",
                                     timeout=30.0, max_retries=3)
        try:
            models = client.models.list().data
        except Exception as e:
            raise ValueError(f"could not list models at {self.cfg.base_urls[0]} ({type(e).__name__}: {e}); "
                             "is the server running? or pass --model NAME") from e
        finally:
            client.close()
        if not models:
            raise ValueError(f"{self.cfg.base_urls[0]} serves no models; pass --model NAME")
        window = getattr(models[0], "max_model_len", None) or (models[0].model_extra or {}).get("max_model_len")
        if isinstance(window, int) and window > 1:
            self.max_seq_length = min(self.max_seq_length, window)
        return models[0].id

    def _probe_tokenize(self):
        import httpx

        root = self.cfg.base_urls[0].removesuffix("/v1")
        headers = {"Authorization": f"Bearer {self.cfg.api_key}"} if self.cfg.api_key else {}
        http = httpx.Client(base_url=root, headers=headers, timeout=30.0)
        try:
            r = http.post("/tokenize", json={"model": self.model_id, "prompt": "x"})
            if r.status_code == 200 and isinstance(r.json().get("count"), int):
                return http
        except (httpx.HTTPError, ValueError):
            pass
        http.close()
        return None

    def _tokenize(self, body: dict) -> int:
        r = self._tokenizer_http.post("/tokenize", json={"model": self.model_id, **body})
        r.raise_for_status()
        return int(r.json()["count"])

    def _count_tokens(self, text: str) -> int:
        return self._tokenize({"prompt": text})

    def _count_prompt_tokens(self, chunk: ChunkLike) -> int:
        return self._tokenize({"messages": build_messages(as_chunk(chunk))})

    def _client(self, url: str):
        """One AsyncOpenAI per endpoint per event loop (httpx connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._clients, self._loop = {}, loop
        if url not in self._clients:
            self._clients[url] = self._openai.AsyncOpenAI(base_url=url, api_key=self.cfg.api_key or "none",
                                                          timeout=self.cfg.timeout, max_retries=0)
        return self._clients[url]

    def _retryable(self, e: Exception) -> bool:
        o = self._openai
        if isinstance(e, (o.APIConnectionError, o.APITimeoutError, o.RateLimitError, o.InternalServerError)):
            return True
        return isinstance(e, o.APIStatusError) and (e.status_code >= 500 or e.status_code in (408, 409, 429))

    async def generate_async(self, chunk: ChunkLike) -> DocResult:
        self._check_open()
        t0 = time.perf_counter()
        c, bad = usable_chunk(chunk)
        if bad is not None:
            return bad
        messages = build_messages(c)
        last: Exception | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.totals["retries"] += 1
                delay = min(self.cfg.max_backoff, self.cfg.backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))
            ep = await self.pool.acquire()
            try:
                resp = await self._client(ep.url).chat.completions.create(
                    model=self.model_id, messages=messages, max_tokens=c.max_new_tokens or self.max_new_tokens,
                    temperature=self.cfg.temperature, extra_body=self.cfg.extra_body or None)
            except Exception as e:
                await self.pool.release(ep, ok=False)
                if not isinstance(e, self._openai.APIError) or not self._retryable(e):
                    return self._error(c, e, t0)
                last = e
                continue
            await self.pool.release(ep, ok=True)
            return self._result(c, resp, ep.url, attempt, t0)
        return self._error(c, last, t0, f" (gave up after {self.cfg.max_retries + 1} tries)")

    def _result(self, c, resp: Any, url: str, attempt: int, t0: float) -> DocResult:
        choice = resp.choices[0]
        u = resp.usage
        prompt, done = (u.prompt_tokens, u.completion_tokens) if u is not None else (0, 0)
        cached = getattr(getattr(u, "prompt_tokens_details", None), "cached_tokens", None) or 0
        self.totals["requests"] += 1
        self.totals["prompt_tokens"] += prompt
        self.totals["completion_tokens"] += done
        finish = choice.finish_reason if choice.finish_reason in ("stop", "length") else (choice.finish_reason or "")
        res = DocResult(chunk_id=c.id, text=(choice.message.content or "").strip(), prompt_tokens=prompt,
                        completion_tokens=done, cached_prompt_tokens=cached, finish_reason=finish,
                        total_time=time.perf_counter() - t0)
        res.extra.update(endpoint=url, attempts=attempt + 1, usage_reported=u is not None)
        return res

    def _error(self, c, e: Exception | None, t0: float, suffix: str = "") -> DocResult:
        self.totals["errors"] += 1
        return DocResult(chunk_id=c.id, finish_reason="error", error=f"{type(e).__name__}: {e}{suffix}",
                         total_time=time.perf_counter() - t0)

    def report(self) -> dict[str, Any]:
        return {"generator": "OpenAIDocGenerator", "model": self.model_id, "prompt_version": PROMPT_VERSION,
                "endpoints": [{"url": e.url, "in_flight": e.in_flight, "served": e.served, "retries": e.retries}
                              for e in self.pool.endpoints],
                "sampling": {"max_new_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature},
                "totals": dict(self.totals)}

    def _release(self) -> None:
        if self._tokenizer_http is not None:
            self._tokenizer_http.close()
        self._clients = {}  # their connections close with the event loop that opened them
