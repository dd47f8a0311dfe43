"""SpecContext: everything speculation may see of the engine, and nothing else.

The speculator and its proposers read the engine only through this object: the KV block pool (to
size proposals so they never force a preemption), the model length, the random generator a
sequence's draws must use, and, for a draft model, what it needs to be built beside the target.
The scheduler's output says which steps were speculative or pure decode (SchedulerOutput), so
nothing here looks at the scheduler's counters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..block_manager import BlockManager


@dataclass(frozen=True)
class SpecContext:
    block_manager: BlockManager  # the target's pool: proposals must fit in its free blocks
    max_model_len: int
    seq_generators: Mapping[int, torch.Generator]  # seq_id -> its own generator (seeded requests)
    shared_generator: torch.Generator  # every other sampled request's draws
    # For a draft model, built beside the target:
    config: Any  # the target's EngineConfig
    tokenizer: Any  # the target's Tokenizer (the draft must share its vocabulary)
    device: torch.device
    dtype: torch.dtype
    attn_backend: str | None  # the target's attention backend, reused by the draft's runner
    vocab_size: int | None  # the target's logits width (None: the fallback runner, no draft)
    num_kv_blocks: int  # the target's KV pool size
    planned_draft_kv_blocks: int | None  # the draft pool setup planned beside the target's, if any

    def generator_for(self, seq_id: int) -> torch.Generator:
        return self.seq_generators.get(seq_id, self.shared_generator)


def seeded_sampled(params) -> bool:
    """A sampled request with its own seed: it is promised the same tokens whatever else runs,
    so it is never speculated on (see Speculator.propose)."""
    return params.seed is not None and not params.greedy
