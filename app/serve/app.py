"""The FastAPI application: OpenAI routes over one AsyncEngine.

POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models, GET /health,
GET /metrics, and vLLM's POST /tokenize. /v1 routes and /tokenize need `Authorization: Bearer KEY`
when the server has a key.
"""
from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.engine import RequestOutput, SamplingParams
from app.engine.parallel_sampling import child_params

from . import responses as R
from .config import ServeConfig
from .engine_client import AsyncEngine
from .metrics import ServerMetrics
from .protocol import APIError, ChatCompletionRequest, CompletionRequest, TokenizeRequest
from .stream_text import SampleStream


@dataclass
class Job:
    """One validated request: its prompt tokens and sampling, ready for the engine."""
    endpoint: str
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    n: int
    chat: bool
    want_top: bool = False


def create_app(cfg: ServeConfig, engine: AsyncEngine) -> FastAPI:
    app = FastAPI(title="docgen serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.cfg, app.state.metrics = engine, cfg, ServerMetrics()
    key = cfg.api_key.encode() if cfg.api_key else None

    async def auth(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), key):  # constant time in the key's length
            raise APIError(401, "invalid API key: send `Authorization: Bearer <key>`", "authentication_error",
                           code="invalid_api_key")

    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> PlainTextResponse:
        if not engine.thread.alive:
            return PlainTextResponse("engine stopped", status_code=503)
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        state = await engine.engine_state()
        return PlainTextResponse(app.state.metrics.render(state, engine.in_flight),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": cfg.name, "object": "model", "created": 0, "owned_by": "docgen",
                                            "max_model_len": engine.max_model_len}]}

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(body: CompletionRequest, request: Request):
        prompt = body.single_prompt()
        ids = engine.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        job = _job(app, "completions", body, ids, body.max_tokens, body.logprobs, chat=False)
        job.want_top = bool(body.logprobs)
        return await _serve(app, request, job, body.stream)

    @app.post("/tokenize", dependencies=[Depends(auth)])
    async def tokenize(body: TokenizeRequest) -> dict:
        """vLLM's route: clients size their inputs with the served model's own tokenizer."""
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "send either `prompt` or `messages`", param="prompt")
        text = body.prompt if body.prompt is not None else _chat_text(engine, body.messages)
        ids = engine.tokenizer.encode(text)
        return {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat(body: ChatCompletionRequest, request: Request):
        ids = engine.tokenizer.encode(_chat_text(engine, body.messages))
        job = _job(app, "chat", body, ids, body.requested_max_tokens(), body.requested_logprobs(), chat=True)
        return await _serve(app, request, job, body.stream)

    return app


def _chat_text(engine: AsyncEngine, messages) -> str:
    try:
        return engine.tokenizer.apply_chat_template([{"role": m.role, "content": m.text()} for m in messages])
    except APIError:
        raise
    except Exception as e:  # e.g. the template rejects a role order
        raise APIError(400, f"the model's chat template rejected these messages: {e}", param="messages") from e


def _job(app: FastAPI, endpoint: str, body, ids: list[int], max_tokens: int | None, logprobs: int | None,
         chat: bool) -> Job:
    engine, cfg = app.state.engine, app.state.cfg
    if body.model is not None and body.model != cfg.name:
        raise APIError(404, f"the model {body.model!r} does not exist; this server serves {cfg.name!r}",
                       param="model", code="model_not_found")
    window = engine.max_model_len
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    bad = [t for t in ids if not 0 <= t < (engine.vocab_size or t + 1)]
    if bad:  # checked here too so that a stream gets a 400, not an error event after its 200
        raise APIError(400, f"token ids out of range for a vocabulary of {engine.vocab_size}: {bad[:5]}", param="prompt")
    if max_tokens is None:
        max_tokens = window - len(ids)
    if len(ids) >= window or len(ids) + max_tokens > window:
        raise APIError(400, f"this model's maximum context length is {window} tokens, but the request has "
                            f"{len(ids)} prompt tokens and asks for {max_tokens} completion tokens; shorten the "
                            "prompt or lower max_tokens", param="max_tokens" if len(ids) < window else "prompt",
                       code="context_length_exceeded")
    if not 1 <= body.n <= 64:
        raise APIError(400, f"n must be in 1..64, got {body.n}", param="n")
    params = body.sampling_params(max_tokens, logprobs)
    rid = engine.new_id("chatcmpl" if chat else "cmpl")
    return Job(endpoint, rid, ids, params, body.n, chat)


async def _serve(app: FastAPI, request: Request, job: Job, stream: bool):
    m = app.state.metrics
    m.prompt_tokens += len(job.prompt_ids)
    if stream:
        return StreamingResponse(_sse(app, job), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    outs = await _run_all(app, request, job)
    if outs is None:  # the client went away; its requests were aborted
        m.disconnects += 1
        m.count(job.endpoint, "disconnected")
        return JSONResponse({}, status_code=499)
    _raise_engine_error(outs)
    m.generation_tokens += sum(len(o.token_ids) for o in outs)
    m.count(job.endpoint, "ok")
    cfg, tok = app.state.cfg, app.state.engine.tokenizer.hf
    if job.chat:
        return R.chat_body(job.rid, cfg.name, tok, len(job.prompt_ids), outs)
    return R.completion_body(job.rid, cfg.name, tok, len(job.prompt_ids), outs, job.want_top)


def _start(app: FastAPI, job: Job, queue: asyncio.Queue | None = None) -> list[asyncio.Task]:
    engine: AsyncEngine = app.state.engine
    return [asyncio.create_task(engine.run(job.prompt_ids, child_params(job.params, i), f"{job.rid}-{i}", queue, i))
            for i in range(job.n)]


async def _run_all(app: FastAPI, request: Request, job: Job) -> list[RequestOutput] | None:
    """All samples' outputs, or None if the client disconnected first (then every sample is aborted)."""
    tasks = _start(app, job)
    try:
        while True:
            done, _ = await asyncio.wait(tasks, timeout=0.1)
            if len(done) == len(tasks):
                return [t.result() for t in tasks]
            if await request.is_disconnected():
                return None
    finally:
        for t in tasks:
            t.cancel()  # no-op for finished ones; aborts the rest in the engine


def _raise_engine_error(outs: list[RequestOutput]) -> None:
    for o in outs:
        if o.error:
            server_side = o.error.startswith("model step failed")
            raise APIError(500 if server_side else 400, o.error, "server_error" if server_side else
                           "invalid_request_error")


async def _sse(app: FastAPI, job: Job):
    """Server-sent events: text deltas per sample, each sample's finish, one usage chunk, [DONE]."""
    cfg, m = app.state.cfg, app.state.metrics
    tok = app.state.engine.tokenizer
    queue: asyncio.Queue = asyncio.Queue()
    tasks = _start(app, job, queue)
    for i, t in enumerate(tasks):
        t.add_done_callback(lambda t, i=i: queue.put_nowait((i, t)))
    skip = job.params.skip_special_tokens
    samples = [SampleStream(job.params.stop, lambda ids: tok.decode(ids, skip)) for _ in range(job.n)]
    outs: list = [None] * job.n
    finished = False
    try:
        while any(o is None for o in outs):
            i, item = await queue.get()
            if outs[i] is not None:
                continue
            if isinstance(item, asyncio.Task):
                outs[i] = out = item.result()
                if out.error:
                    raise APIError(400, out.error)
                (text, lps), finish = samples[i].finish(out.text, out.token_ids, out.logprobs), out.finish_reason
            else:
                step = samples[i].update(*item)
                if step is None:
                    continue
                (text, lps), finish = step, None
            yield _event(R.chunk(job.rid, cfg.name, job.chat, i, text, finish, samples[i].first,
                                 _chunk_logprobs(tok.hf, job, lps, samples[i])))
            samples[i].first = False
        m.generation_tokens += sum(len(o.token_ids) for o in outs)
        yield _event(R.usage_chunk(job.rid, cfg.name, job.chat, len(job.prompt_ids), outs))
        yield "data: [DONE]\n\n"
        finished = True
        m.count(job.endpoint, "ok")
    except APIError as e:
        m.count(job.endpoint, "error")
        yield _event(e.body())
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            m.disconnects += 1
            m.count(job.endpoint, "disconnected")
        for t in tasks:
            t.cancel()


def _chunk_logprobs(tok, job: Job, entries: list | None, sample: SampleStream) -> dict | None:
    if entries is None:
        return None
    if job.chat:
        return R.chat_logprobs(tok, entries)
    body = R.completion_logprobs(tok, entries, job.want_top, sample.offset)
    sample.offset += sum(len(t) for t in body["tokens"])
    return body


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        where = ".".join(str(x) for x in errs[0]["loc"][1:]) if errs else None
        msg = "; ".join(f"{'.'.join(str(x) for x in d['loc'][1:])}: {d['msg']}" for d in errs) or "invalid request"
        return JSONResponse(APIError(400, msg, param=where or None).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(APIError(e.status_code, str(e.detail), "invalid_request_error").body(),
                            status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crash(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse(APIError(500, f"{type(e).__name__}: {e}", "server_error").body(), status_code=500)
