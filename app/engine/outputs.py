"""RequestOutput: what the engine returns for one finished request."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)  # generated tokens only
    finish_reason: str | None = None  # "stop" | "length" | "error" | "abort"
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    metrics: dict = field(default_factory=dict)  # queue_time, time_to_first_token, total_time, tokens
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
