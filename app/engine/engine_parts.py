"""What every runner hands the engine, and the KV pool sizing both runners share.

A neutral module: setup.py (native) and fallback_setup.py (transformers) both import it and
neither imports the other's internals. The runner says what it can do in `capabilities`; the
engine combines that with the caller's config (the config itself is never rewritten).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .config import EngineConfig
from .cpu_kv import cpu_kv_budget
from .kv_cache_spec import KVCacheSpec, as_kv_spec
from .load_report import LoadReport
from .memory_budget import KvPlan, draft_footprint, plan_kv_blocks, read_cuda_memory, usable_bytes
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerCapabilities:
    """What a runner can do; the engine turns a requested feature on only when the runner can."""
    prefix_caching: bool = True  # a paged KV cache whose blocks requests can share


@runtime_checkable
class Runner(Protocol):
    """What the engine needs from a runner (model_runner.ModelRunner, fallback_runner.FallbackRunner).

    `execute` runs one scheduled step and returns (logits (R, vocab) float32 of the sampling rows,
    [(seq_id, first row, number of rows)] per sampling sequence). The KV pool is sized from
    `kv_bytes_per_block` and allocated once with `allocate_kv_cache`; `attn_layers` are the paged
    attention layers (empty when the runner has no paged pool)."""
    device: torch.device
    dtype: torch.dtype
    block_size: int
    attn_layers: list
    kv_dtype: torch.dtype

    @property
    def vocab_size(self) -> int: ...

    def kv_bytes_per_block(self, kv_dtype: torch.dtype) -> int: ...

    def allocate_kv_cache(self, num_blocks: int, spec: KVCacheSpec | torch.dtype) -> None: ...

    def execute(self, out: Any, pending: Any = None) -> tuple[torch.Tensor, list[tuple[int, int, int]]]: ...


@dataclass
class EngineParts:
    tokenizer: Tokenizer
    runner: Runner  # ModelRunner (native) or FallbackRunner
    device: torch.device
    dtype: torch.dtype
    hf_config: object
    max_model_len: int
    num_blocks: int
    report: LoadReport = field(default_factory=LoadReport)
    backend: str = "native"  # or "transformers-fallback" (architectures without a native model)
    capabilities: RunnerCapabilities = field(default_factory=RunnerCapabilities)


def model_max_len(cfg: EngineConfig, hf_config) -> tuple[int, int]:
    """(the model's position limit, the engine's max_model_len before KV and sliding-window caps)."""
    max_pos = int(getattr(hf_config, "max_position_embeddings", None) or 4096)
    return max_pos, min(cfg.max_model_len or max_pos, max_pos)


def quant_config(cfg):
    """The QuantConfig of a load-time quantization (the LM head choice covers a tied embedding too)."""
    from .quant import QuantConfig

    return QuantConfig(format=cfg.quantization, tied_embedding=cfg.quant_lm_head, lm_head=cfg.quant_lm_head)


def quant_cache_dir(cfg: EngineConfig) -> Path | None:
    """Where quantized weights are cached between starts ("" turns the cache off)."""
    if cfg.quant_cache_dir is not None:
        return Path(cfg.quant_cache_dir).expanduser() if cfg.quant_cache_dir else None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "docgen-engine" / "quant"


def quant_cache_key(cfg: EngineConfig, files: list[Path], dtype_name: str) -> str:
    """The quantized-weights cache key for a model quantized after loading (and LoRA merging): it
    covers everything the quantized tensors depend on: checkpoint, merged adapters, dtype."""
    from .loader import checkpoint_fingerprint

    adapters = [p for d in (cfg.lora_path or []) for p in sorted(Path(d).glob("adapter_*"))]
    return f"{checkpoint_fingerprint(list(files) + adapters)}-{dtype_name}"


def allocate_kv_pool(cfg: EngineConfig, runner, kv_spec: KVCacheSpec | torch.dtype, device, max_model_len: int,
                     report: LoadReport | None = None) -> tuple[int, int]:
    """Sizes and allocates the KV pool; returns (num_blocks, max_model_len capped to what fits).

    With a draft model the plan also reserves the draft's weights and KV pool; report.draft_kv_blocks
    tells the draft how many blocks it may allocate (memory_budget.py)."""
    kv_spec = as_kv_spec(kv_spec)
    plan = plan_kv_pool(cfg, runner, kv_spec.dtype, device, max_model_len)
    num_blocks = plan.num_blocks
    if report is not None and plan.draft_blocks:
        report.draft_kv_blocks = plan.draft_blocks
    runner.allocate_kv_cache(num_blocks, kv_spec)
    if num_blocks * cfg.block_size < max_model_len:
        log.warning("KV pool holds %d tokens, less than max_model_len %d: capping max_model_len",
                    num_blocks * cfg.block_size, max_model_len)
        max_model_len = num_blocks * cfg.block_size
    return num_blocks, max_model_len


def plan_kv_pool(cfg: EngineConfig, runner, kv_dtype, device, max_model_len: int) -> KvPlan:
    """The budget: on CUDA the memory usable under gpu_memory_utilization, split between the
    target's pool and a draft's weights + pool; else kv_cache_memory_gb or a CPU cap for the
    target's pool (the user sized it), the draft's pool as many blocks (capped by what it can use)."""
    per_block = runner.kv_bytes_per_block(kv_dtype)
    try:
        draft = draft_footprint(cfg, getattr(runner, "dtype", kv_dtype), max_model_len)
    except (OSError, ValueError) as e:  # unreadable draft: the draft's own loader reports it (spec/draft.py)
        log.debug("draft model not budgeted: %s", e)
        draft = None
    d_block, d_max = (draft.block_bytes, draft.max_blocks) if draft else (0, None)
    if cfg.kv_cache_memory_gb is None and device.type == "cuda":
        budget = usable_bytes(read_cuda_memory(device), cfg.gpu_memory_utilization)
        plan = plan_kv_blocks(budget, per_block, d_block, draft.weight_bytes if draft else 0, d_max)
    else:
        if cfg.kv_cache_memory_gb is not None:
            budget = int(cfg.kv_cache_memory_gb * (1 << 30))
        else:
            budget = cpu_kv_budget(cfg, per_block, max_model_len)
        n = budget // per_block
        plan = KvPlan(n, min(n, d_max) if draft else 0, budget)
    if plan.num_blocks < 1 or (draft and plan.draft_blocks < 1):
        need = per_block + d_block + plan.draft_weight_bytes
        extra = (f", plus the draft model's {plan.draft_weight_bytes / 2**30:.2f} GiB of weights and "
                 f"{d_block / 2**20:.2f} MiB per block" if draft else "")
        raise ValueError(
            f"no memory left for the KV cache (budget {plan.budget / 2**30:.2f} GiB; one block needs "
            f"{per_block / 2**20:.2f} MiB{extra}, {need / 2**30:.2f} GiB at least); raise kv_cache_memory_gb / "
            "gpu_memory_utilization, free the GPU of other processes, or use a smaller model")
    return plan
