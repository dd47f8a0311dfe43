"""Block manager bookkeeping, pure Python: exact blocks, ref counts, keys, LRU eviction."""
from __future__ import annotations

import pytest

from app.engine.block_manager import BlockManager, block_key


def test_allocate_release_and_refcounts():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = bm.allocate(3)
    assert a == [0, 1, 2] and bm.num_free_blocks == 1
    assert bm.allocate(2) is None  # not enough: nothing taken
    assert bm.num_free_blocks == 1
    bm.release(a)
    assert bm.num_free_blocks == 4
    assert all(b.ref_count == 0 for b in bm.blocks)
    with pytest.raises(AssertionError):
        bm.release([0])


def test_prefix_match_shares_blocks_and_counts_refs():
    bm = BlockManager(num_blocks=8, block_size=2)
    toks = [5, 6, 7, 8, 9]
    blocks = bm.allocate(3)
    k0 = bm.register(blocks[0], None, (5, 6))
    k1 = bm.register(blocks[1], k0, (7, 8))
    assert k0 == block_key(None, (5, 6)) and k1 == block_key(k0, (7, 8))
    # Registered blocks are usable at once (same-step sharing), at most max_tokens long.
    assert bm.match_prefix(toks, 4) == blocks[:2]
    assert bm.match_prefix(toks, 3) == blocks[:1]
    assert bm.match_prefix([5, 6, 0, 0], 4) == blocks[:1]
    bm.take(blocks[:2])
    assert [bm.blocks[b].ref_count for b in blocks] == [2, 2, 1]


def test_freed_keyed_blocks_stay_cached_and_evict_lru():
    bm = BlockManager(num_blocks=3, block_size=1)
    a, b, c = bm.allocate(3)
    ka = bm.register(a, None, (1,))
    kb = bm.register(b, ka, (2,))
    bm.mark_computed([a, b])
    bm.release([a])
    bm.release([b])
    bm.release([c])  # unkeyed: goes to the front, reused first
    assert bm.match_prefix([1, 2, 3], 2) == [a, b]
    assert bm.allocate(1) == [c] and bm.num_evictions == 0
    assert bm.allocate(1) == [a]  # a was freed before b: least recently used
    assert bm.num_evictions == 1
    assert bm.match_prefix([1, 2, 3], 2) == []  # chain broken at a
    assert kb in bm.cached  # b itself is still cached until evicted


def test_uncomputed_block_loses_its_key_when_freed():
    bm = BlockManager(num_blocks=2, block_size=1)
    (a,) = bm.allocate(1)
    bm.register(a, None, (1,))
    bm.release([a])  # owner preempted in the step that registered it: KV never written
    assert bm.match_prefix([1, 2], 1) == []


def test_collision_check_compares_tokens():
    bm = BlockManager(num_blocks=2, block_size=1)
    (a,) = bm.allocate(1)
    key = bm.register(a, None, (1,))
    bm.blocks[a].token_ids = (99,)  # simulate a hash collision: same key, other tokens
    assert bm.cached[key] == a
    assert bm.match_prefix([1, 2], 1) == []


def test_duplicate_key_keeps_second_block_private():
    bm = BlockManager(num_blocks=2, block_size=1)
    a, b = bm.allocate(2)
    assert bm.register(a, None, (1,)) is not None
    assert bm.register(b, None, (1,)) is None
    assert bm.blocks[b].key is None
