"""How many bytes a model will take (weights, rotary table, KV cache) and how many are free.

Estimated from config.json and the safetensors headers before anything is allocated, so that a
model or a `kv_cache_memory_gb` larger than the machine fails with one clear message instead of
an allocator error (or minutes of swapping) part-way through loading.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .model_check import ModelLoadError, text_config

log = logging.getLogger(__name__)
GiB = 1 << 30


@dataclass
class MemoryEstimate:
    weights: int  # bytes of the weights as built (dense, in the load dtype)
    rotary: int  # the cos/sin table of the native model
    kv: int  # the KV pool the engine will allocate
    config_params: int  # parameters config.json describes
    stored_params: int | None  # parameters the weight files hold (None: not safetensors)
    kv_explicit: bool  # kv comes from kv_cache_memory_gb

    @property
    def total(self) -> int:
        return self.weights + self.rotary + self.kv

    def as_report(self) -> dict:
        return {"weights_gib": self.weights / GiB, "rotary_gib": self.rotary / GiB, "kv_gib": self.kv / GiB,
                "total_gib": self.total / GiB}


def _dims(c) -> dict:
    h, heads = int(c.hidden_size), int(c.num_attention_heads)
    kv = int(getattr(c, "num_key_value_heads", None) or heads)
    d = int(getattr(c, "head_dim", None) or h // heads)
    inter = int(getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * h)
    return dict(h=h, heads=heads, kv=kv, d=d, inter=inter, layers=int(c.num_hidden_layers), vocab=int(c.vocab_size))


def config_params(hf_config) -> int:
    """Parameters of a dense decoder with these sizes (gated MLP; MoE experts are not counted,
    so this is a lower bound for those)."""
    c = text_config(hf_config)
    m = _dims(c)
    h, d = m["h"], m["d"]
    per_layer = h * m["heads"] * d * 2 + 2 * h * m["kv"] * d + 3 * h * m["inter"] + 2 * h
    embed = m["vocab"] * h * (1 if getattr(c, "tie_word_embeddings", True) else 2)
    return embed + m["layers"] * per_layer


def kv_bytes_per_token(hf_config, kv_dtype: torch.dtype) -> int:
    m = _dims(text_config(hf_config))
    return 2 * m["layers"] * m["kv"] * m["d"] * torch.empty(0, dtype=kv_dtype).element_size()


def estimate_memory(cfg, hf_config, device: torch.device, dtype: torch.dtype, stored) -> MemoryEstimate:
    """Bytes the engine will allocate for this config (see setup.build_engine_parts)."""
    from .kv_cache_spec import resolve_kv_dtype
    from .models.registry import has_native_implementation
    from .cpu_kv import CPU_KV_CAP_BYTES

    c = text_config(hf_config)
    n_config = config_params(hf_config)
    prequantized = getattr(hf_config, "quantization_config", None) is not None
    elem = torch.empty(0, dtype=dtype).element_size()
    native = has_native_implementation(hf_config)
    # Pre-quantized checkpoints are built as stored. Load-time quantization of a native model streams
    # (setup._streams_quantization: not with LoRA adapters): the quantized model plus one layer in
    # full precision. Otherwise dense weights in the load dtype (quantization, if any, starts from them).
    if prequantized and stored is not None:
        weights = stored.nbytes
    elif cfg.quantization in ("4bit", "8bit") and native and not cfg.lora_path:
        weights = streamed_quantized_bytes(c, cfg.quantization, elem, device, cfg.quant_lm_head)
    else:
        weights = max(n_config, stored.numel if stored else 0) * elem
    max_pos = int(getattr(c, "max_position_embeddings", None) or 4096)
    rotary = 2 * max_pos * _dims(c)["d"] * 4 if native else 0  # fp32 cos and sin, one row per position
    kv_dtype = resolve_kv_dtype(cfg.kv_cache_dtype, dtype, native)
    per_token = kv_bytes_per_token(hf_config, kv_dtype)
    if cfg.kv_cache_memory_gb is not None:
        kv = int(cfg.kv_cache_memory_gb * GiB)
    elif device.type == "cuda":
        kv = 0  # sized from what is free after the weights (gpu_memory_utilization)
    else:
        max_len = min(cfg.max_model_len or max_pos, max_pos)
        kv = min(CPU_KV_CAP_BYTES, cfg.max_num_seqs * max_len * per_token + per_token * cfg.block_size)
    return MemoryEstimate(weights, rotary, kv, n_config, stored.numel if stored else None,
                          cfg.kv_cache_memory_gb is not None)


# Bytes per weight of a quantized Linear: int4 nibbles plus a bf16 scale and zero per group of 128
# (quant/int4.py); int8 plus one scale per row (negligible).
QUANT_BYTES_PER_WEIGHT = {"4bit": 0.5 + 4 / 128, "8bit": 1.0}


def streamed_quantized_bytes(c, fmt: str, elem: int, device: torch.device, head_setting: str = "auto") -> int:
    """Peak weight bytes of a load that quantizes while streaming (quant/stream.py): every decoder
    Linear quantized; the LM head (with the embedding, when tied) in 8 bits or dense (EngineConfig.
    quant_lm_head, quant/embedding.py), an untied embedding dense, norms dense;
    plus the largest fused layer (gate|up) in the load dtype and its float32 quantization temporaries."""
    from .quant.embedding import tied_8bit_wanted

    m = _dims(c)
    h, d = m["h"], m["d"]
    linear = m["layers"] * (h * m["heads"] * d * 2 + 2 * h * m["kv"] * d + 3 * h * m["inter"])
    tied = bool(getattr(c, "tie_word_embeddings", True))
    embed = m["vocab"] * h
    head8 = tied_8bit_wanted(head_setting, device)  # tied pair or untied head in per-row int8
    embed_bytes = embed * (1 if head8 else elem) if tied else embed * (elem + (1 if head8 else elem))
    transient = 2 * m["inter"] * h * (elem + 3 * 4)
    return int(linear * QUANT_BYTES_PER_WEIGHT[fmt]) + embed_bytes + m["layers"] * 2 * h * elem + transient


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device: CUDA's free bytes; on the CPU MemAvailable, within any cgroup
    limit. None where it cannot be read (then the check is skipped with a warning)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # cgroup v2: a container's limit can be far below the host's free memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(int(limit) - used, 0)
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    if avail is None and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    return avail


def check_fits(est: MemoryEstimate, device: torch.device, path) -> None:
    free = available_bytes(device)
    if free is None:
        log.warning("cannot tell how much %s memory is free: the model's memory (%.2f GiB) is not checked "
                    "before loading", device, est.total / GiB)
        return
    if est.total <= free:
        return
    parts = f"weights {est.weights / GiB:.2f} GiB, KV cache {est.kv / GiB:.2f} GiB"
    if est.rotary >= GiB // 64:
        parts += f", rotary table {est.rotary / GiB:.2f} GiB (max_position_embeddings)"
    if est.kv_explicit and est.kv > free:
        advice = "lower kv_cache_memory_gb"
    elif device.type == "cuda":
        advice = "use quantization, a smaller model, or a GPU with more memory"
    else:
        advice = "use a smaller model, a lower kv_cache_memory_gb or max_model_len, or a machine with more memory"
    raise ModelLoadError(f"model {path} needs about {est.total / GiB:.2f} GiB on {device} ({parts}) but only "
                         f"{free / GiB:.2f} GiB is available: {advice}")
