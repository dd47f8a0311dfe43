"""Builds the engine's parts from an EngineConfig: device, dtype, tokenizer, model, KV pool.

Load-time transforms (LoRA merge, weight quantization) happen here, between reading the
checkpoint and sizing the KV pool, so the model code never knows about them.
"""
from __future__ import annotations

import contextlib
import logging

import torch
from torch.overrides import TorchFunctionMode

from .attention.backend import load_backend
from .config import EngineConfig
from .cpu_kv import cpu_kv_dtype
from .engine_parts import EngineParts, allocate_kv_pool, model_max_len, quant_cache_dir, quant_cache_key, quant_config
from .errors import UnsupportedFeature
from .load_meter import LoadMeter
from .kv_cache_spec import KVCacheSpec, calibrated, kv_cache_spec
from .loader import iter_weights, load_hf_config, weight_files
from .load_report import LoadReport
from .names import resolve_device, resolve_model_path
from .checkpoint_check import check_model
from .model_runner import ModelRunner
from .models.registry import build_native_model, has_native_implementation
from .quant.prequant_config import prequantized_spec
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, hf_config, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32  # CPU half-precision matmuls are slow and lossy
    cfg = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    cfg = DTYPES.get(str(cfg).replace("torch.", ""), torch.bfloat16) if cfg is not None else torch.bfloat16
    return cfg if cfg in (torch.bfloat16, torch.float16) else torch.bfloat16


class _MetaParams(TorchFunctionMode):
    """Model construction with every torch.empty (how nn.Linear / nn.Embedding allocate their
    weights) on the meta device, and torch.nn.init's initialisers skipped on meta tensors; all else
    (rotary tables, norm weights) is computed for real on the device of the enclosing context.
    Unlike `with torch.device("meta")`, the rotary maths does not run on meta, where Python
    decompositions import sympy and friends on first use (+170 MB resident for the rest of the
    process). A torch-function mode is per thread: other threads are unaffected."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "meta"}
        elif func in _INITIALISERS:
            t = args[0] if args else kwargs["tensor"]
            if t.is_meta:
                return t
        return func(*args, **kwargs)


_INITIALISERS = {getattr(torch.nn.init, n) for n in dir(torch.nn.init)
                 if n.endswith("_") and not n.startswith("_") and callable(getattr(torch.nn.init, n))}


def build_model(cfg: EngineConfig, path, hf_config, device, dtype, max_positions: int):
    files = weight_files(path, cfg.allow_pickle)
    prequant = prequantized_spec(hf_config, quantization=cfg.quantization, lora_path=cfg.lora_path)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        # AWQ/GPTQ: build on meta so quantized projections never get dense weights (quant/prequantized.py)
        with torch.device(device), (_MetaParams() if prequant else contextlib.nullcontext()):
            model = build_native_model(hf_config, max_positions)
    finally:
        torch.set_default_dtype(prev)
    weights = iter_weights(files)
    if cfg.lora_path:
        from .lora import merge_lora_weights

        weights = merge_lora_weights(weights, cfg.lora_path, hf_config)
    if prequant:
        from .quant.prequantized import load_prequantized

        loaded = load_prequantized(model, weights, prequant, device, hf_config)
    else:
        loaded = model.load_weights(weights)
    missing = model.expected_weights() - loaded
    if missing:
        raise ValueError(f"checkpoint {path} lacks weights: {sorted(missing)[:6]}...")
    model.model.rotary.float()  # keep the cos/sin table in fp32 whatever the model dtype
    return model.eval(), files


def build_streamed_quantized_model(cfg: EngineConfig, path, hf_config, device, dtype, max_positions: int):
    """Quantized load without a full-precision copy (quant/stream.py): meta build, then each layer
    quantized as its tensors stream in from the memory-mapped checkpoint (or mapped from the cache).
    -> (model, files, quantization report)."""
    from .loader import checkpoint_fingerprint, iter_mapped_weights
    from .quant.stream import load_streaming

    files = weight_files(path, cfg.allow_pickle)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), _MetaParams():
            model = build_native_model(hf_config, max_positions)
    finally:
        torch.set_default_dtype(prev)
    # The key covers everything the quantized tensors depend on: checkpoint and dtype.
    key = f"{checkpoint_fingerprint(files)}-{str(dtype).replace('torch.', '')}"
    loaded, report = load_streaming(model, iter_mapped_weights(files), quant_config(cfg), device,
                                    hf_config, cache_dir=quant_cache_dir(cfg), cache_key=key)
    missing = model.expected_weights() - loaded
    if missing:
        raise ValueError(f"checkpoint {path} lacks weights: {sorted(missing)[:6]}...")
    model.model.rotary.float()  # keep the cos/sin table in fp32 whatever the model dtype
    return model.eval(), files, report


def build_engine_parts(cfg: EngineConfig) -> EngineParts:
    path = resolve_model_path(cfg.model)
    hf_config = load_hf_config(path, cfg.trust_remote_code)
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.cpu_threads is not None:
        torch.set_num_threads(cfg.cpu_threads)  # process-wide: torch has one intra-op pool
    dtype = resolve_dtype(cfg.dtype, hf_config, device)
    check_model(cfg, path, hf_config, device, dtype)  # sizes, weight files, memory: before allocating
    tok = Tokenizer(resolve_model_path(cfg.tokenizer) if cfg.tokenizer else path, cfg.trust_remote_code)
    prequant = prequantized_spec(hf_config, quantization=cfg.quantization, lora_path=cfg.lora_path,
                                 native=has_native_implementation(hf_config))  # ValueError if unsupported
    if not has_native_implementation(hf_config):
        from .fallback_setup import build_fallback_parts

        return build_fallback_parts(cfg, path, hf_config, device, dtype, tok)
    max_pos, max_model_len = model_max_len(cfg, hf_config)
    sliding = getattr(hf_config, "sliding_window", None)
    if sliding and getattr(hf_config, "use_sliding_window", True) and sliding < max_model_len:
        log.warning("model uses sliding-window attention (%d); capping max_model_len to it", sliding)
        max_model_len = sliding
    load = LoadMeter()
    report = LoadReport.start(path, device, dtype, "native")
    streamed = _streams_quantization(cfg, prequant)
    if streamed:
        try:
            model, files, report.quantization = build_streamed_quantized_model(cfg, path, hf_config, device,
                                                                                  dtype, max_pos)
        except Exception as e:  # noqa: BLE001 - reported by name; the half-built model is never usable
            _optional_failed(cfg, report, "quantization", e, intact=False)
    else:
        model, files = build_model(cfg, path, hf_config, device, dtype, max_pos)
    if prequant:
        from .quant.prequantized import prequantized_report

        report.quantization = prequantized_report(prequant, model)
    elif cfg.quantization and not streamed:  # LoRA: merged dense, then quantized
        from .quant import quantize_model_

        key = quant_cache_key(cfg, files, report.dtype)
        try:
            report.quantization = quantize_model_(
                model, quant_config(cfg), cache_dir=quant_cache_dir(cfg), cache_key=key)
        except Exception as e:  # noqa: BLE001 - any failure of this optional transform is reported by name
            _optional_failed(cfg, report, "quantization", e, intact=not _any_quantized(model))
    if device.type == "cpu" and _any_quantized(model):
        from .quant.chain import keep_kernel_dtype_

        keep_kernel_dtype_(model)  # bf16 kernel outputs flow on: fewer dtype conversions per step (quant/chain.py)
        from .quant.vnni import use_vnni_

        kernel = use_vnni_(model, cfg.cpu_kernels)  # int8 activations, integer dot products
        if report.quantization is not None:
            report.quantization.cpu_kernel = kernel
    elif device.type == "cpu" and dtype == torch.bfloat16:
        from .layers.bf16_linear import use_bf16_kernel_

        report.cpu_kernel = use_bf16_kernel_(model, cfg.cpu_kernels)  # batch-1 bf16 matmuls (vdpbf16ps)
    elif device.type == "cpu" and dtype == torch.float32:
        from .layers.f32_linear import use_f32_kernels_

        report.cpu_kernel = use_f32_kernels_(model, cfg.cpu_kernels)  # ours for few rows, oneDNN for more
    report.load = load.done(model)
    runner = ModelRunner(model, device, dtype, cfg.block_size)
    backend = _backend_name(cfg, device)
    runner.set_backend(load_backend(backend))
    report.attention_backend = backend
    try:  # fp8: scales fixed now (calibration prompt or scales file), before any request runs
        spec = kv_cache_spec(cfg, dtype)
        if device.type == "cpu" and not spec.is_fp8:  # bf16 where the CPU has it and the weights are quantized
            spec = KVCacheSpec(cpu_kv_dtype(dtype, bool(cfg.quantization)))
        kv_spec = calibrated(spec, runner, tok, max_model_len)
        num_blocks, max_model_len = allocate_kv_pool(cfg, runner, kv_spec, device, max_model_len, report)
    except ValueError:
        raise  # no memory for any KV pool, or a bad scales file: not something to turn off silently
    except Exception as e:  # noqa: BLE001
        if cfg.kv_cache_dtype != "fp8":
            raise
        _optional_failed(cfg, report, "kv_cache_quantization", e, intact=True)
        kv_spec = KVCacheSpec(dtype)  # the pool in the model's dtype instead; the weights are untouched
        num_blocks, max_model_len = allocate_kv_pool(cfg, runner, kv_spec, device, max_model_len, report)
    report.update(kv_blocks=num_blocks, kv_tokens=num_blocks * cfg.block_size, max_model_len=max_model_len,
                  **kv_spec.as_report())
    if cfg.enable_compilation:
        from .compile import compile_model_

        report.compile = compile_model_(model, device)
    if device.type == "cpu":  # after compilation: compiled pieces keep the module path
        report.extra["lean_forward"] = runner.use_lean_forward(cfg.cpu_lean_forward)
        report.extra["fused_decode"] = runner.use_fused_decode(
            cfg.cpu_fused_decode and cfg.cpu_kernels != "torch",
            "cpu_kernels='torch'" if cfg.cpu_kernels == "torch" else "cpu_fused_decode=False")
    report.cuda_graphs = _setup_cuda_graphs(cfg, runner, backend, device, max_model_len)
    return EngineParts(tok, runner, device, dtype, hf_config, max_model_len, num_blocks, report)


def _streams_quantization(cfg: EngineConfig, prequant) -> bool:
    """Quantize while reading (quant/stream.py)? Not for pre-quantized checkpoints, and not with
    LoRA adapters (the merge needs each dense weight first: dense load, merge, then quantize)."""
    return bool(cfg.quantization) and not prequant and not cfg.lora_path


def _optional_failed(cfg: EngineConfig, report: LoadReport, feature: str, exc: BaseException, intact: bool) -> None:
    """An optional feature failed at load: turn it off in place if the caller allows it and the
    model is still whole, else raise UnsupportedFeature naming it."""
    reason = f"{type(exc).__name__}: {exc}"
    if feature in cfg.optional_features and intact:
        log.warning("%s could not be set up (%s); continuing without it", feature, reason)
        report.disable(feature, reason)
        return
    raise UnsupportedFeature(feature, reason) from exc


def _any_quantized(model) -> bool:
    from .quant import QUANTIZED_TYPES

    return any(isinstance(m, QUANTIZED_TYPES) for m in model.modules())


def _backend_name(cfg: EngineConfig, device: torch.device) -> str:
    if cfg.attention_backend != "auto":
        return cfg.attention_backend
    if device.type == "cuda":
        try:
            from .attention import triton_backend

            if triton_backend.is_available():
                return "triton"
        except Exception:  # pragma: no cover - triton missing on this GPU machine
            log.warning("Triton attention unavailable on this GPU; using the torch reference backend")
        return "torch_ref"
    return "torch_cpu"


def _setup_cuda_graphs(cfg, runner, backend, device, max_model_len) -> dict:
    if device.type != "cuda":
        return {"active": False, "reason": "CUDA graphs need a CUDA device"}
    if cfg.enforce_eager:
        return {"active": False, "reason": "enforce_eager=True"}
    if backend != "triton":
        return {"active": False, "reason": f"the {backend} attention backend is not graph-capturable"}
    import time

    from .cuda_graphs import CudaGraphDecoder

    t0 = time.perf_counter()
    runner.graphs = g = CudaGraphDecoder(runner.model, device, cfg.max_num_seqs, max_model_len, cfg.block_size)
    g.capture_all()  # fp8 KV scales are fixed by now (kv_cache_spec.py), so graphs may bake them in
    # start-up time on a bare GPU machine is mostly this (and Triton compiles inside it)
    log.info("captured %d CUDA graphs (batch sizes %s) in %.1f s", len(g.buckets), g.buckets,
             time.perf_counter() - t0)
    return {"active": True, "buckets": g.buckets, "capture_seconds": time.perf_counter() - t0,
            "captured": "at start-up"}
