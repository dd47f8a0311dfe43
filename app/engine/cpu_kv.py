"""The KV pool on the CPU: its size when no budget is given, and its dtype."""
from __future__ import annotations

import torch

from . import memory

CPU_KV_CAP_BYTES = 2 << 30  # default KV budget on the CPU when none is given


def cpu_kv_budget(cfg, per_block: int, max_model_len: int) -> int:
    """CPU KV bytes when no budget is given: what the work can use (max_num_seqs sequences of
    max_model_len tokens, plus one block), capped by CPU_KV_CAP_BYTES and by a quarter of the
    memory the machine has available now (a laptop must not swap for a pool it never fills)."""
    needed = cfg.max_num_seqs * max_model_len * per_block // cfg.block_size + per_block
    cap = CPU_KV_CAP_BYTES
    avail = memory.available()
    if avail is not None:
        cap = min(cap, max(avail // 4, per_block))
    return min(cap, needed)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 loads/converts are native, so a bf16 KV cache costs no time."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume not
        return False


def cpu_kv_dtype(model_dtype: torch.dtype, quantized: bool) -> torch.dtype:
    """KV dtype on the CPU (kv_cache_dtype="auto"): bf16 (half the memory) when the weights are
    quantized anyway and the CPU has native bf16; else the model dtype, so the full-precision
    engine stays exact against its reference."""
    if quantized and model_dtype == torch.float32 and cpu_has_native_bf16():
        return torch.bfloat16
    return model_dtype
