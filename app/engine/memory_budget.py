"""How many bytes of GPU memory the KV pools may take, from one reading of the device's memory.

`torch.cuda.mem_get_info` reports what the *driver* sees as free. Memory a previous engine in the
same process freed is still held by torch's caching allocator (reserved but unallocated), so the
driver counts it as used: a second `LLM` in one process would see almost nothing free and get a
negative budget. We collect garbage and empty the cache before reading, and count whatever the
allocator still reserves without using as free (it is ours to hand out again).

With a draft model (speculative decoding) the target's KV pool, the draft's weights and the draft's
KV pool come out of one budget, planned before either pool is allocated (`plan_kv_blocks`).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryReading:
    free: int  # bytes the driver reports free
    total: int  # device capacity
    reserved: int  # held by torch's caching allocator (includes allocated)
    allocated: int  # in live tensors


def read_cuda_memory(device: torch.device) -> MemoryReading:
    """Frees what can be freed (dead engines' tensors, the allocator's cache), then reads."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return MemoryReading(free, total, torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device))


def usable_bytes(r: MemoryReading, gpu_memory_utilization: float) -> int:
    """Bytes we may still allocate so that everything in use stays within utilization x total.

    Cached-but-unallocated memory counts as free: the driver sees it as used, but our own
    allocations are served from it first. May be negative (another process or live tensors
    already use more than the share); the caller turns that into a clear error.
    """
    cached_free = max(0, r.reserved - r.allocated)
    in_use = r.total - r.free - cached_free  # by live tensors here, other processes, the CUDA context
    return int(r.total * gpu_memory_utilization) - in_use


@dataclass(frozen=True)
class KvPlan:
    num_blocks: int  # target KV blocks
    draft_blocks: int  # draft KV blocks (0 without a draft model)
    budget: int  # bytes the plan was made from
    draft_weight_bytes: int = 0


def plan_kv_blocks(budget: int, target_block_bytes: int, draft_block_bytes: int = 0,
                   draft_weight_bytes: int = 0, draft_max_blocks: int | None = None) -> KvPlan:
    """Splits one budget between the target's pool and a draft's weights + pool.

    Every scheduled token needs a slot in both pools, so without a cap the two pools get the same
    number of blocks: n = (budget - draft weights) / (target block + draft block). With a cap
    (the draft never holds more than draft_max_blocks: the tokens its sequences can have), the
    draft takes at most that and the rest goes to the target.
    """
    rest = budget - draft_weight_bytes
    if not draft_block_bytes:
        return KvPlan(max(0, rest // target_block_bytes), 0, budget, draft_weight_bytes)
    n = max(0, rest // (target_block_bytes + draft_block_bytes))
    draft = n if draft_max_blocks is None else min(n, draft_max_blocks)
    target = max(0, (rest - draft * draft_block_bytes) // target_block_bytes)
    return KvPlan(int(target), int(draft), budget, draft_weight_bytes)


def kv_bytes_per_block(hf_config, block_size: int, dtype: torch.dtype) -> int:
    """K and V of every layer for one block of tokens, from a (decoder) HF config."""
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return 2 * hf_config.num_hidden_layers * block_size * kv_heads * head_dim * dtype.itemsize


def checkpoint_weight_bytes(files, dtype: torch.dtype) -> int:
    """Bytes the checkpoint's tensors take once loaded in dtype (read from safetensors headers)."""
    from safetensors import safe_open

    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():
                shape = sf.get_slice(name).get_shape()
                n = 1
                for s in shape:
                    n *= s
                total += n * dtype.itemsize
    return total


@dataclass(frozen=True)
class DraftFootprint:
    weight_bytes: int  # the draft's weights, loaded in the engine's dtype
    block_bytes: int  # one KV block of the draft
    max_blocks: int  # the most blocks the draft's sequences can ever hold


def draft_footprint(ecfg, dtype: torch.dtype, max_model_len: int) -> DraftFootprint | None:
    """What a draft model (speculative_method='draft') will need, read from its files without loading it."""
    spec = ecfg.speculative
    if spec.method != "draft":
        return None
    from .loader import load_hf_config, weight_files
    from .names import resolve_model_path

    path = resolve_model_path(spec.draft_model)
    hf = load_hf_config(path, ecfg.trust_remote_code)
    files = weight_files(path, ecfg.allow_pickle)
    weights = sum(f.stat().st_size for f in files if f.suffix != ".safetensors")
    weights += checkpoint_weight_bytes([f for f in files if f.suffix == ".safetensors"], dtype)
    seqs = spec.max_batch_size or ecfg.max_num_seqs
    bs = ecfg.block_size
    per_seq = -(-(max_model_len + spec.num_speculative_tokens) // bs)
    return DraftFootprint(weights, kv_bytes_per_block(hf, bs, dtype), seqs * per_seq)
