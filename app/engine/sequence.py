"""Sequence: one request's tokens, its block table, and how far its KV has been computed."""
from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field

from .sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class SequenceMetrics:
    arrival_time: float = 0.0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None

    def as_dict(self) -> dict:
        a = self.arrival_time
        return {
            "queue_time": (self.first_scheduled_time - a) if self.first_scheduled_time else None,
            "time_to_first_token": (self.first_token_time - a) if self.first_token_time else None,
            "total_time": (self.finished_time - a) if self.finished_time else None,
        }


_counter = itertools.count()


@dataclass(eq=False)
class Sequence:
    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    token_ids: list[int] = field(default_factory=list)  # prompt + output
    block_table: list[int] = field(default_factory=list)
    block_keys: list[int] = field(default_factory=list)  # prefix-hash chain of full blocks
    # Proposed (unverified) tokens for speculative decoding; never part of token_ids.
    spec_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache (or queued to be, see scheduler.launched)
    # Tokens sampled by a launched step whose values have not reached the host yet (0 or 1; only
    # with async scheduling). They follow token_ids; the next step may already compute them.
    num_placeholders: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache (first admission)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    error: str | None = None
    stop_text_index: int | None = None  # where the output text ends after a stop string (stop_strings.py)
    num_preemptions: int = 0
    spec_proposed: int = 0
    spec_accepted: int = 0
    spec_verifications: int = 0  # steps in which this sequence's proposals were verified
    metrics: SequenceMetrics = field(default_factory=SequenceMetrics)
    seq_id: int = field(default_factory=lambda: next(_counter))
    priority: int = 0  # lower is served first (waiting_queue.py); equal priorities: first come, first served
    arrival_order: int | None = None  # set when first queued; kept across preemptions
    admission_order: int = 0  # set on each admission; orders `running` among equal priorities

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)
        if not self.request_id:
            self.request_id = str(self.seq_id)
        if not self.metrics.arrival_time:
            self.metrics.arrival_time = time.perf_counter()

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
