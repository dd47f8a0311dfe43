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
    # With SamplingParams.logprobs: one entry per token of token_ids:
    # {"token_id": int, "logprob": float, "top": [(token_id, logprob), ...]} (raw model log-probs).
    logprobs: list[dict] | None = None
    # With SamplingParams.n > 1: every sample (each a RequestOutput); the fields above are sample 0's.
    outputs: list["RequestOutput"] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def samples(self) -> list["RequestOutput"]:
        """All samples, whatever n was (vLLM's `outputs`)."""
        return self.outputs or [self]
