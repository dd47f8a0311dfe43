"""The load-time module swap: replace nn.Linear modules by quantized ones, in place."""
from __future__ import annotations

import fnmatch
import time
from collections import Counter

import torch
import torch.nn as nn

from .cache import cache_identity, cache_path, read_cache, write_cache
from .config import QuantConfig
from .fp8 import Fp8Linear, fp8_shape_problem, quantize_rowwise_fp8
from .int4 import Int4Weights, pick_group_size, quantize_int4
from .int4_kernels import shape_problem as int4_shape_problem
from .int4_linear import Int4Linear
from .int8 import Int8Linear, quantize_int8
from .support import default_dense_min_m, supported_formats

QUANTIZED_TYPES = (Int4Linear, Int8Linear, Fp8Linear)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers, each storage counted once (tied weights once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.device.type != "meta" else (id(t), 0)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def _skipped_reason(name: str, mod: nn.Linear, cfg: QuantConfig, shared: set[int]) -> str | None:
    if mod.weight.data_ptr() in shared:
        return "weight is tied to another parameter (e.g. the embedding)"
    last = name.rsplit(".", 1)[-1]
    for pat in cfg.skip:
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(last, pat):
            return f"matches skip pattern {pat!r}"
    return None


def _plan(model: nn.Module, cfg: QuantConfig) -> tuple[list[tuple[str, nn.Linear, int | None]], dict[str, str]]:
    counts = Counter(p.data_ptr() for _, p in model.named_parameters(remove_duplicate=False))
    shared = {ptr for ptr, c in counts.items() if c > 1}
    targets, skipped = [], {}
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:  # exact type: never re-quantize or touch subclasses
            continue
        reason = _skipped_reason(name, mod, cfg, shared)
        n, k = mod.weight.shape
        g = None
        if reason is None and cfg.format == "4bit":
            g = pick_group_size(k, cfg.group_size)
            reason = (f"in_features {k} has no int4 group size <= {cfg.group_size} dividing it" if g is None
                      else int4_shape_problem(n, k, g, mod.weight.device))
        elif reason is None and cfg.format == "fp8":
            reason = fp8_shape_problem(n, k)
        if reason:
            skipped[name] = reason
        else:
            targets.append((name, mod, g))
    return targets, skipped


def _quantize(fmt: str, w: torch.Tensor, g: int | None, cfg: QuantConfig) -> dict[str, torch.Tensor]:
    if fmt == "4bit":
        q = quantize_int4(w, g, hqq=cfg.hqq, hqq_iters=cfg.hqq_iters)
        return {"qweight": q.qweight, "scales": q.scales, "zeros": q.zeros}
    if fmt == "8bit":
        q, s = quantize_int8(w)
        return {"qweight": q, "scale": s}
    q, s = quantize_rowwise_fp8(w)
    return {"qweight": q, "w_scale": s}


def _build(fmt: str, p: dict[str, torch.Tensor], g: int | None, bias, device, cfg: QuantConfig) -> nn.Module:
    dense = default_dense_min_m(device, fmt) if cfg.dense_min_m == "auto" else cfg.dense_min_m
    p = {k: v.to(device) for k, v in p.items()}
    if fmt == "4bit":
        return Int4Linear(Int4Weights(p["qweight"], p["scales"], p["zeros"], g), bias, device=device,
                          dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype)
    if fmt == "8bit":
        return Int8Linear(p["qweight"], p["scale"], bias, dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype)
    return Fp8Linear(p["qweight"], p["w_scale"], bias)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_model_(model: nn.Module, cfg: QuantConfig, *, cache_dir=None, cache_key: str | None = None) -> dict:
    """Swap the model's nn.Linear modules for quantized ones in place; returns a report:
    {format, quantized: [names], skipped: {name: reason}, group_sizes: {name: g} (4bit),
     bytes_before, bytes_after (weight_bytes of the whole model), cache: None|"hit"|"miss", cache_path, seconds}.

    cache_dir + cache_key (a fingerprint of the checkpoint, e.g. hashes of its files): quantized
    tensors are read from / written to an on-disk cache; a new key re-quantizes.
    Raises ValueError if the format cannot run on the model's device (no silent fallback).
    """
    t0 = time.perf_counter()
    report = {"format": cfg.format, "quantized": [], "skipped": {}, "group_sizes": {}, "cache": None,
              "cache_path": None, "bytes_before": weight_bytes(model)}
    if cfg.format is None:
        report.update(bytes_after=report["bytes_before"], seconds=0.0)
        return report
    if cache_dir is not None and not cache_key:
        raise ValueError("cache_dir needs cache_key: pass a fingerprint of the checkpoint (e.g. a hash of its files)")
    targets, skipped = _plan(model, cfg)
    for dev in {str(m.weight.device) for _, m, _ in targets}:
        reason = supported_formats(dev)[cfg.format]
        if reason:
            raise ValueError(f"quantization={cfg.format!r} is not available on {dev}: {reason}")

    infos = {name: {"format": cfg.format, "group_size": g, "shape": list(m.weight.shape)} for name, m, g in targets}
    cached = None
    if cache_dir is not None:
        identity = cache_identity(cache_key, cfg.cache_fields(), cfg.skip)
        path = cache_path(cache_dir, identity)
        report["cache_path"] = str(path)
        cached = read_cache(path, identity)
        if cached is not None and cached[1] != infos:  # the model's layers differ from the cached ones
            cached = None
        report["cache"] = "hit" if cached is not None else "miss"

    to_write: dict[str, dict[str, torch.Tensor]] = {}
    targets.reverse()
    while targets:  # pop as we go so each dense weight can be freed right after its swap
        name, mod, g = targets.pop()
        dev = mod.weight.device
        if cached is not None:
            payload = cached[0][name]
        else:
            payload = _quantize(cfg.format, mod.weight.detach(), g, cfg)
            if cache_dir is not None:
                to_write[name] = {k: v.cpu() for k, v in payload.items()}
        new = _build(cfg.format, payload, g, mod.bias, dev, cfg)
        _set_module(model, name, new)
        del mod  # the dense weight is freed once nothing else refers to it
        report["quantized"].append(name)
        if g is not None:
            report["group_sizes"][name] = g
    if cache_dir is not None and cached is None:
        write_cache(path, identity, to_write, infos)
    report["skipped"] = skipped
    report["bytes_after"] = weight_bytes(model)
    report["seconds"] = time.perf_counter() - t0
    return report
