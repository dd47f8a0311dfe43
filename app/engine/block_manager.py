"""Paged KV blocks: allocation, ref counts, prefix hashing and LRU eviction. Pure Python, no torch.

A full block is keyed by a hash chain over the whole prefix up to its end, so equal keys mean equal
prefixes. A block is registered under its key in the very step in which its last token's KV is
written. Other requests admitted later in that same step may already use it: every attention
backend writes the step's new K/V into the cache before any attention of that layer reads it.
That is what makes the *first wave* share: 100 requests with one system prompt, submitted
together, compute the prompt's blocks once.

Freed blocks keep their key and content and join the free queue's tail (least recently used at
the head), so a later request can revive them; allocation evicts from the head. A registered block
that was never fully computed (its owner was preempted in the step that registered it) loses its
key when freed.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(eq=False)
class Block:
    block_id: int
    ref_count: int = 0
    key: int | None = None  # prefix hash, when registered
    parent_key: int | None = None
    token_ids: tuple[int, ...] | None = None  # for the collision check
    computed: bool = False


def block_key(parent_key: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((parent_key, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # Free blocks, least recently used first. Blocks without a key go to the front.
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # key -> block_id
        self.num_evictions = 0

    # ----- queries -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def prefix_keys(self, token_ids: list[int], num_full_blocks: int) -> list[int]:
        """Keys of the first `num_full_blocks` full blocks of `token_ids`."""
        keys, parent, bs = [], None, self.block_size
        for b in range(num_full_blocks):
            parent = block_key(parent, tuple(token_ids[b * bs : (b + 1) * bs]))
            keys.append(parent)
        return keys

    def match_prefix(self, token_ids: list[int], max_tokens: int) -> list[int]:
        """Block ids of the longest cached prefix covering at most `max_tokens` tokens."""
        if not self.enable_prefix_caching:
            return []
        bs, parent, hits = self.block_size, None, []
        for b in range(max_tokens // bs):
            toks = tuple(token_ids[b * bs : (b + 1) * bs])
            key = block_key(parent, toks)
            bid = self.cached.get(key)
            if bid is None:
                break
            blk = self.blocks[bid]
            if blk.token_ids != toks or blk.parent_key != parent:  # hash collision
                break
            hits.append(bid)
            parent = key
        return hits

    # ----- mutations -----------------------------------------------------------------------
    def take(self, block_ids: list[int]) -> None:
        """Add a reference to each (cached) block, reviving it from the free queue if needed."""
        for bid in block_ids:
            blk = self.blocks[bid]
            if blk.ref_count == 0:
                del self.free[bid]
            blk.ref_count += 1

    def allocate(self, n: int) -> list[int] | None:
        """n fresh blocks (evicting cached ones LRU), or None when there are not enough."""
        if n > len(self.free):
            return None
        out = []
        for _ in range(n):
            bid, _ = self.free.popitem(last=False)
            blk = self.blocks[bid]
            if blk.key is not None:
                self._forget(blk)
                self.num_evictions += 1
            blk.ref_count = 1
            out.append(bid)
        return out

    def release(self, block_ids: list[int]) -> None:
        """Drop one reference from each block; blocks reaching zero join the free queue.

        Released in reverse so a sequence's tail blocks are evicted before its head blocks
        (the head, e.g. a shared system prompt, is the most likely to be reused).
        """
        for bid in reversed(block_ids):
            blk = self.blocks[bid]
            assert blk.ref_count > 0, f"block {bid} released more often than taken"
            blk.ref_count -= 1
            if blk.ref_count == 0:
                if blk.key is not None and not blk.computed:
                    self._forget(blk)
                self.free[bid] = None
                if blk.key is None:
                    self.free.move_to_end(bid, last=False)

    def register(self, block_id: int, parent_key: int | None, token_ids: tuple[int, ...]) -> int | None:
        """Key a full block by its prefix; returns the key, or None if prefix caching is off or
        another block already holds this key (then this block stays private)."""
        if not self.enable_prefix_caching:
            return None
        blk = self.blocks[block_id]
        assert len(token_ids) == self.block_size
        key = block_key(parent_key, token_ids)
        if blk.key is not None:
            return blk.key
        if key in self.cached:
            return None
        blk.key, blk.parent_key, blk.token_ids, blk.computed = key, parent_key, token_ids, False
        self.cached[key] = block_id
        return key

    def mark_computed(self, block_ids: list[int]) -> None:
        for bid in block_ids:
            self.blocks[bid].computed = True

    def reset_prefix_cache(self) -> None:
        for blk in self.blocks:
            if blk.ref_count == 0 and blk.key is not None:
                self._forget(blk)

    def _forget(self, blk: Block) -> None:
        if self.cached.get(blk.key) == blk.block_id:
            del self.cached[blk.key]
        blk.key = blk.parent_key = blk.token_ids = None
        blk.computed = False
