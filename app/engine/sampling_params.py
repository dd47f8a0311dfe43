"""SamplingParams: how one request is sampled and when it stops. Validated at construction.

Field names and meanings follow vLLM's SamplingParams where the two overlap, so requests written
for vLLM (or its OpenAI server) mean the same here. Where we differ on purpose, README "Serving"
says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = off (-1 is vLLM's spelling; stored as 0)
    seed: int | None = None
    # Stop strings: generation ends at the first token whose text completes one (the earliest
    # completed wins; ties in one token go to the first in this list). Not in the output text
    # unless include_stop_str_in_output.
    stop: list[str] | str | None = None
    # Stop tokens (EOS too): kept in token_ids; their text is left out of the output text unless
    # include_stop_str_in_output (as vLLM does).
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    n: int = 1  # independent samples of this prompt (sample i uses seed + i when seed is set)
    min_tokens: int = 0  # EOS / stop tokens / stop strings cannot end generation before this many
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's log-prob plus the top k

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == -1:
            self.top_k = 0
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, or -1 (0 and -1 disable it), got {self.top_k!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop must be a list of non-empty strings")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must be non-negative integers")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise ValueError(f"min_tokens must be an integer >= 0, got {self.min_tokens!r}")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            raise ValueError(f"logprobs must be an integer in [0, 20] (top alternatives per token), got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
