"""The docgen workload (shared/design/REFERENCE.md), as token ids: one shared system prompt, then a
code chunk per request, greedy, EOS ignored so every request makes all its new tokens."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Workload:
    prompts: list[list[int]]
    max_new_tokens: int
    shared_prefix_len: int

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def docgen_workload(n: int, vocab_size: int, prefix_len: int = 200, chunk_min: int = 300,
                    chunk_max: int = 600, max_new_tokens: int = 128, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    lo = 3  # skip the special tokens (0..2 in our test tokenizers)
    system = [rng.randrange(lo, vocab_size) for _ in range(prefix_len)]
    prompts = [system + [rng.randrange(lo, vocab_size) for _ in range(rng.randint(chunk_min, chunk_max))]
               for _ in range(n)]
    return Workload(prompts, max_new_tokens, prefix_len)


def decoder_flops_per_token(cfg) -> float:
    """2 x non-embedding matmul parameters (+ the LM head): FLOPs of one token's forward,
    attention scores excluded (small at these lengths)."""
    h, L, i = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or h // heads
    per_layer = h * (heads * d + 2 * kv * d) + heads * d * h + 3 * h * i
    return 2.0 * (L * per_layer + h * cfg.vocab_size)
