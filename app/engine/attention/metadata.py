"""Per-step attention metadata: where each new token's K/V goes and what each query may see.

Layout of one layer's paged KV cache (shared by every backend):
    k_cache, v_cache: (num_blocks, block_size, num_kv_heads, head_dim)
A token's "slot" is block_id * block_size + offset_in_block.

Tokens of a step are flattened: sequence i owns query rows
query_start_loc[i] : query_start_loc[i+1], which are the *last* q_len_i positions of a
context of seq_lens[i] tokens (cached prefix + this step's new tokens). Masking is therefore
lower-right causal: query row r of sequence i (0-based within the sequence) sees keys
0 .. seq_lens[i] - q_len_i + r.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # (num_tokens,) int64; -1 = padding token, write nothing
    query_start_loc: torch.Tensor  # (num_seqs + 1,) int32, cumulative query lengths
    seq_lens: torch.Tensor  # (num_seqs,) int32, context length after this step
    block_tables: torch.Tensor  # (num_seqs, max_blocks_per_seq) int32, padded with 0
    # Host-side copies, so reference code and launch grids need no device sync.
    query_lens_cpu: list[int]
    seq_lens_cpu: list[int]
    max_query_len: int
    max_seq_len: int

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def is_pure_decode(self) -> bool:
        return self.max_query_len == 1
