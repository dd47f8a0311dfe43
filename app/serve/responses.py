"""OpenAI response bodies (completion, chat, their stream chunks, usage, logprobs) from engine outputs."""
from __future__ import annotations

import time
from typing import Any

from app.engine import RequestOutput


def usage(prompt_tokens: int, outs: list[RequestOutput]) -> dict:
    done = sum(len(o.token_ids) for o in outs)
    cached = max((o.num_cached_tokens for o in outs), default=0)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _tok(tokenizer: Any, tid: int) -> str:
    return tokenizer.decode([tid], skip_special_tokens=False)


def completion_logprobs(tokenizer: Any, entries: list[dict] | None, want_top: bool, start: int = 0) -> dict | None:
    """The legacy completions shape: parallel lists of tokens, log-probs, top alternatives, and
    offsets of each token in the whole completion (a stream chunk passes where it starts)."""
    if entries is None:
        return None
    tokens = [_tok(tokenizer, e["token_id"]) for e in entries]
    offsets, pos = [], start
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    top = [{_tok(tokenizer, i): lp for i, lp in e["top"]} for e in entries] if want_top else None
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries], "top_logprobs": top,
            "text_offset": offsets}


def chat_logprobs(tokenizer: Any, entries: list[dict] | None) -> dict | None:
    if entries is None:
        return None

    def item(tid: int, lp: float) -> dict:
        t = _tok(tokenizer, tid)
        return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}

    return {"content": [dict(item(e["token_id"], e["logprob"]), top_logprobs=[item(i, lp) for i, lp in e["top"]])
                        for e in entries]}


def completion_body(rid: str, model: str, tokenizer: Any, prompt_tokens: int, outs: list[RequestOutput],
                    want_top: bool) -> dict:
    choices = [{"index": i, "text": o.text, "finish_reason": o.finish_reason,
                "logprobs": completion_logprobs(tokenizer, o.logprobs, want_top)} for i, o in enumerate(outs)]
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, outs)}


def chat_body(rid: str, model: str, tokenizer: Any, prompt_tokens: int, outs: list[RequestOutput]) -> dict:
    choices = [{"index": i, "message": {"role": "assistant", "content": o.text}, "finish_reason": o.finish_reason,
                "logprobs": chat_logprobs(tokenizer, o.logprobs)} for i, o in enumerate(outs)]
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, outs)}


def chunk(rid: str, model: str, chat: bool, index: int, text: str, finish: str | None, first: bool,
          logprobs: dict | None = None) -> dict:
    if chat:
        delta: dict = {"content": text}
        if first:
            delta["role"] = "assistant"
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    else:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(rid: str, model: str, chat: bool, prompt_tokens: int, outs: list[RequestOutput]) -> dict:
    return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": usage(prompt_tokens, outs)}
