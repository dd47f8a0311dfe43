"""The load-time module swap: replace nn.Linear modules by quantized ones, in place."""
from __future__ import annotations

import fnmatch
import time
from collections import Counter

import torch
import torch.nn as nn

from .cache import cache_identity, cache_path, read_cache, write_cache
from .config import QuantConfig
from .embedding import build_tied_int8, tied_8bit_wanted, tied_pairs, untied_heads
from .fp8 import Fp8Linear, fp8_shape_problem, quantize_rowwise_fp8
from .int4 import Int4Weights, pick_group_size, quantize_int4
from .int4_kernels import shape_problem as int4_shape_problem
from .int4_linear import Int4Linear
from .int8 import Int8Linear, quantize_int8
from .state import layout_tag, module_from_state, module_state
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
    if _tie_key(mod.weight) in shared:
        return "weight is tied to another parameter (e.g. the embedding)"
    last = name.rsplit(".", 1)[-1]
    for pat in cfg.skip:
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(last, pat):
            return f"matches skip pattern {pat!r}"
    return None


def _tie_key(p: torch.Tensor) -> int:
    # meta tensors all have data_ptr 0: there a tie is the same Parameter object
    return id(p) if p.is_meta else p.data_ptr()


def _plan(model: nn.Module, cfg: QuantConfig, device=None) -> tuple[list[tuple[str, nn.Linear, int | None]], dict[str, str]]:
    """device: where the layers will run (default: where their weights are; pass it for a meta model)."""
    counts = Counter(_tie_key(p) for _, p in model.named_parameters(remove_duplicate=False))
    shared = {ptr for ptr, c in counts.items() if c > 1}
    targets, skipped = [], {}
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:  # exact type: never re-quantize or touch subclasses
            continue
        reason = _skipped_reason(name, mod, cfg, shared)
        n, k = mod.weight.shape
        dev = torch.device(device) if device is not None else mod.weight.device
        g = None
        if reason is None and cfg.format == "4bit":
            g = pick_group_size(k, cfg.group_size)
            reason = (f"in_features {k} has no int4 group size <= {cfg.group_size} dividing it" if g is None
                      else int4_shape_problem(n, k, g, dev))
        elif reason is None and cfg.format == "fp8":
            reason = fp8_shape_problem(n, k)
        if reason:
            skipped[name] = reason
        else:
            targets.append((name, mod, g))
    return targets, skipped


def planned_info(cfg: QuantConfig, mod: nn.Linear, g: int | None) -> dict:
    """What module_state will say about the module built for `mod` (the cache is checked against it)."""
    kind = {"4bit": "int4", "8bit": "int8", "fp8": "fp8"}[cfg.format]
    info = {"kind": kind, "group_size": g} if kind == "int4" else {"kind": kind}
    return {**info, "shape": list(mod.weight.shape)}


def tied_info(embed_name: str, shape) -> dict:
    return {"kind": "int8-tied", "embedding": embed_name, "shape": list(shape)}


def int8_heads(model: nn.Module, cfg: QuantConfig, device) -> list[str]:
    """The untied LM heads to store in 8 bits on this device (embedding.untied_heads, cfg.lm_head)."""
    return untied_heads(model, cfg) if tied_8bit_wanted(cfg.lm_head, device) else []


def head_info(shape) -> dict:
    return {"kind": "int8", "shape": list(shape)}


def quantize_head(weight: torch.Tensor | None, device, cfg: QuantConfig, quantized=None) -> Int8Linear:
    """An untied (V, H) LM head -> per-row int8 (the tied head's math, without the embedding);
    quantized: (q, scale) already computed (the streamed load quantizes in row blocks)."""
    q, s = quantized if quantized is not None else quantize_int8(weight.to(device))
    dense = default_dense_min_m(device, "8bit") if cfg.dense_min_m == "auto" else cfg.dense_min_m
    return Int8Linear(q, s, None, dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype)


def open_cache(cfg: QuantConfig, cache_dir, cache_key, device, tied8: bool, infos: dict, report: dict,
               head8: bool = False):
    """-> (path, identity, cached payloads or None); fills report["cache"/"cache_path"]."""
    if cache_dir is None:
        return None, None, None
    if not cache_key:
        raise ValueError("cache_dir needs cache_key: pass a fingerprint of the checkpoint (e.g. a hash of its files)")
    fields = {**cfg.cache_fields(), "layout": layout_tag(device, cfg), "tied_embedding": "8bit" if tied8 else "dense"}
    if head8:  # only when there is one: caches of models without an untied head keep their identity
        fields["lm_head"] = "8bit"
    identity = cache_identity(cache_key, fields, cfg.skip)
    path = cache_path(cache_dir, identity)
    cached = read_cache(path, identity)
    if cached is not None and cached[1] != infos:  # the model's layers differ from the cached ones
        cached = None
    report.update(cache_path=str(path), cache="hit" if cached is not None else "miss")
    return path, identity, None if cached is None else cached[0]


def quantize_tied(weight: torch.Tensor, head_bias, dtype: torch.dtype, device, cfg: QuantConfig):
    """A tied (V, H) matrix -> (Int8Embedding, Int8Linear head) sharing one int8 copy."""
    q, s = quantize_int8(weight.to(device))
    dense = default_dense_min_m(device, "8bit") if cfg.dense_min_m == "auto" else cfg.dense_min_m
    return build_tied_int8(q, s, head_bias, dtype, dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype)


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
     tied_embedding: None | {"embedding", "head", "format"} (the tied pair, not in quantized/skipped),
     lm_head: None | {"name", "format": "8bit"} (an untied head stored in 8 bits, listed in quantized),
     bytes_before, bytes_after (weight_bytes of the whole model), cache: None|"hit"|"miss", cache_path, seconds}.

    cache_dir + cache_key (a fingerprint of the checkpoint, e.g. hashes of its files): quantized
    tensors are mapped from / written to an on-disk cache; a new key re-quantizes.
    Raises ValueError if the format cannot run on the model's device (no silent fallback).
    (setup.build_model does not use this on a fresh load: quant/stream.py quantizes while reading.)
    """
    t0 = time.perf_counter()
    report = {"format": cfg.format, "quantized": [], "skipped": {}, "group_sizes": {}, "cache": None,
              "cache_path": None, "tied_embedding": None, "lm_head": None, "bytes_before": weight_bytes(model)}
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
    device = targets[0][1].weight.device if targets else next(model.parameters()).device
    pairs = tied_pairs(model) if cfg.format != "fp8" and tied_8bit_wanted(cfg.tied_embedding, device) else []
    infos = {name: planned_info(cfg, m, g) for name, m, g in targets}
    for emb, head in pairs:
        infos[head] = tied_info(emb, model.get_submodule(head).weight.shape)
    heads = int8_heads(model, cfg, device)
    for head in heads:
        infos[head] = head_info(model.get_submodule(head).weight.shape)
    path, identity, cached = open_cache(cfg, cache_dir, cache_key, device, bool(pairs), infos, report, bool(heads))

    to_write: dict[str, dict[str, torch.Tensor]] = {}
    targets.reverse()
    while targets:  # pop as we go so each dense weight can be freed right after its swap
        name, mod, g = targets.pop()
        dev = mod.weight.device
        if cached is not None:
            new = module_from_state(cached[name], infos[name], dev, cfg, mod.weight.dtype)
        else:
            new = _build(cfg.format, _quantize(cfg.format, mod.weight.detach(), g, cfg), g, mod.bias, dev, cfg)
        _set_module(model, name, new)
        to_write[name] = module_state(new)[0]
        del mod  # the dense weight is freed once nothing else refers to it
        report["quantized"].append(name)
        if g is not None:
            report["group_sizes"][name] = g
    for emb, head in pairs:
        h = model.get_submodule(head)
        if cached is not None:
            e_new, h_new = module_from_state(cached[head], infos[head], device, cfg, h.weight.dtype)
        else:
            e_new, h_new = quantize_tied(h.weight.detach(), h.bias, h.weight.dtype, device, cfg)
        _set_module(model, emb, e_new)
        _set_module(model, head, h_new)
        to_write[head] = module_state(h_new)[0]
        skipped.pop(head, None)
        report["tied_embedding"] = {"embedding": emb, "head": head, "format": "8bit"}
    for head in heads:
        h = model.get_submodule(head)
        new = (module_from_state(cached[head], infos[head], device, cfg, h.weight.dtype) if cached is not None
               else quantize_head(h.weight.detach(), device, cfg))
        _set_module(model, head, new)
        to_write[head] = module_state(new)[0]
        skipped.pop(head, None)
        report["quantized"].append(head)
        report["lm_head"] = {"name": head, "format": "8bit"}
    if cache_dir is not None and cached is None:
        write_cache(path, identity, to_write, infos)
    report["skipped"] = skipped
    report["bytes_after"] = weight_bytes(model)
    report["seconds"] = time.perf_counter() - t0
    return report
