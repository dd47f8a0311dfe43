"""Engine parts for an architecture without a native implementation: the transformers fallback.

Called by setup.build_engine_parts when the checkpoint's architecture is not in
NATIVE_ARCHITECTURES. Loads the model through transformers (LoRA merged, then optional weight
quantization), sizes a virtual KV pool for the scheduler, and says, in the load report and in one
warning, what the fallback cannot do.
"""
from __future__ import annotations

import logging
import warnings

import torch

from .engine_parts import (EngineParts, RunnerCapabilities, allocate_kv_pool, model_max_len, quant_cache_dir,
                           quant_cache_key, quant_config)
from .fallback_runner import FallbackRunner
from .load_report import LoadReport
from .models.hf_fallback import build_fallback_model

log = logging.getLogger(__name__)

BACKEND = "transformers-fallback"

# What the native backend has and the fallback does not (name -> why / what runs instead).
UNAVAILABLE = {
    "paged_kv": "no paged KV cache: one dense transformers cache per sequence",
    "prefix_caching": "no prefix sharing between requests (enable_prefix_caching has no effect)",
    "triton_attention": "no Triton paged attention: transformers' own attention implementation runs",
    "cuda_graphs": "no CUDA graphs",
    "fp8_kv_cache": "no fp8 KV cache: the cache is kept in the model dtype",
    "batched_prefill": "prefill chunks run one forward per sequence; decode steps are batched (stacked "
                       "dense caches) except for sliding-window models, which decode one sequence per forward",
    "speculative_draft_model": "no draft-model speculative decoding (n-gram prompt lookup works)",
}


def build_fallback_parts(cfg, path, hf_config, device: torch.device, dtype: torch.dtype, tok):
    archs = list(getattr(hf_config, "architectures", None) or [type(hf_config).__name__])
    _check_transformers_has(archs, hf_config, cfg.trust_remote_code)
    if cfg.speculative.method == "draft":
        raise ValueError(f"{archs[0]} runs on the transformers fallback backend, which cannot verify a draft "
                         "model's proposals; use speculative_method='ngram' or no speculative decoding")
    report = LoadReport.start(path, device, dtype, BACKEND, architecture=archs[0])
    notes = []
    if cfg.kv_cache_dtype == "fp8":
        notes.append("kv_cache_dtype='fp8' ignored")
    if cfg.attention_backend == "triton":
        notes.append("attention_backend='triton' ignored")

    model, files = build_fallback_model(cfg, path, hf_config, device, dtype)
    if cfg.quantization:
        from .quant import quantize_model_

        q = quantize_model_(model, quant_config(cfg), cache_dir=quant_cache_dir(cfg),
                            cache_key=quant_cache_key(cfg, files, report.dtype))
        report.quantization = q
        if not report.quantization.quantized:
            notes.append(f"quantization={cfg.quantization!r} found no plain nn.Linear layer to quantize "
                         f"(e.g. GPT-2's Conv1D), weights stay in {report.dtype}")
    if cfg.lora_path:
        report.extra["lora"] = [str(p) for p in cfg.lora_path]

    _, max_model_len = model_max_len(cfg, hf_config)
    runner = FallbackRunner(model, device, dtype, cfg.block_size)
    num_blocks, max_model_len = allocate_kv_pool(cfg, runner, dtype, device, max_model_len)
    report.update(kv_blocks=num_blocks, kv_tokens=num_blocks * cfg.block_size, max_model_len=max_model_len,
                  kv_cache_dtype=str(dtype).replace("torch.", ""), prefix_caching=False,
                  unavailable=dict(UNAVAILABLE))
    if notes:
        report.extra["fallback_notes"] = notes
    warnings.warn(
        f"{archs[0]} has no native implementation: it runs on the transformers fallback backend, without "
        f"paged KV / prefix sharing, Triton attention, CUDA graphs, fp8 KV cache, batched prefill "
        f"and draft-model speculation" + (f" ({'; '.join(notes)})" if notes else ""),
        UserWarning, stacklevel=4)
    return EngineParts(tok, runner, device, dtype, hf_config, max_model_len, num_blocks, report,
                       backend=BACKEND, capabilities=RunnerCapabilities(prefix_caching=False))


def _check_transformers_has(archs: list[str], hf_config, trust_remote_code: bool) -> None:
    """The fallback runs the class the config names; a name transformers does not know is refused
    rather than silently replaced by whatever class its model_type maps to."""
    import transformers

    from .models.registry import NATIVE_ARCHITECTURES

    if not getattr(hf_config, "architectures", None) or any(hasattr(transformers, a) for a in archs):
        return
    if trust_remote_code and getattr(hf_config, "auto_map", None):
        return
    raise ValueError(
        f"architecture {archs} has no native implementation (native: {', '.join(sorted(NATIVE_ARCHITECTURES))}) "
        f"and transformers {transformers.__version__} has no class of that name for the fallback backend; "
        "upgrade transformers, or pass trust_remote_code=True for a model that ships its own code")
