"""Request models of the OpenAI API subset we serve, and OpenAI's error shape.

Unknown fields are accepted and ignored (clients send `user`, `metadata`, ...), as vLLM does.
Sampling fields beyond OpenAI's (top_k, min_tokens, ignore_eos, include_stop_str_in_output,
stop_token_ids, skip_special_tokens) are vLLM's extensions, with vLLM's names.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from app.engine import SamplingParams


class APIError(Exception):
    """An error a route returns to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = True  # we always send the usage chunk; the field is accepted for compatibility


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: float = 1.0  # OpenAI's default
    top_p: float = 1.0
    top_k: Optional[int] = None
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: Optional[list[int]] = None
    n: int = 1
    min_tokens: int = 0
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: Optional[StreamOptions] = None

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        try:
            return SamplingParams(
                max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                top_k=0 if self.top_k is None else self.top_k, seed=self.seed, stop=self.stop,
                stop_token_ids=self.stop_token_ids or [], ignore_eos=self.ignore_eos,
                skip_special_tokens=self.skip_special_tokens, min_tokens=self.min_tokens,
                include_stop_str_in_output=self.include_stop_str_in_output, logprobs=logprobs)
        except (ValueError, TypeError) as e:
            raise APIError(400, str(e)) from e


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16  # OpenAI's default for completions
    logprobs: Optional[int] = None  # top alternatives per token (0: only the chosen token)
    echo: bool = False
    suffix: Optional[str] = None

    def single_prompt(self) -> str | list[int]:
        """One prompt per request (send several requests for a batch: they share the engine's batch)."""
        p = self.prompt
        if self.echo or self.suffix:
            raise APIError(400, "echo and suffix are not supported", param="echo" if self.echo else "suffix")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]
        if isinstance(p, str) or (isinstance(p, list) and all(isinstance(t, int) for t in p)):
            return p
        raise APIError(400, "send one prompt per request (a string or a list of token ids); "
                            "concurrent requests are batched together by the engine", param="prompt")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: Union[str, list[dict[str, Any]], None] = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise APIError(400, f"only text content parts are supported, got {part.get('type')!r}",
                               param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> int | None:
        if not self.logprobs:
            if self.top_logprobs:
                raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
            return None
        return self.top_logprobs or 0


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a prompt as is, or chat messages through the model's template."""
    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None


Finish = Literal["stop", "length"]
