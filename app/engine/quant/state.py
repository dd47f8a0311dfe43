"""A quantized module's tensors as stored in the quantized-weights cache, and back.

The cache holds each module's own buffers in the layout its kernels read (on CPU: torch's int4
blocked layout, int8 rows, scales already in the kernel dtype), so a start from the cache builds
the modules directly on views of the memory-mapped file: no re-packing and no copy. The layout
depends on the device type, the kernel dtype and the torch version (the CPU int4 packing is not
a public format); `layout_tag` goes into the cache identity so any change of those misses.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import QuantConfig
from .embedding import Int8Embedding, build_tied_int8
from .fp8 import Fp8Linear
from .int4_linear import Int4Linear
from .int8 import Int8Linear
from .support import default_dense_min_m


def layout_tag(device: torch.device, cfg: QuantConfig) -> str:
    device = torch.device(device)
    kdtype = str(cfg.cpu_dtype if device.type == "cpu" else torch.bfloat16).replace("torch.", "")
    return f"{device.type}:{kdtype}:torch-{torch.__version__}"


def module_state(mod: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (tensors, info) of a quantized module (biases included)."""
    if isinstance(mod, Int4Linear):
        t = {"packed": mod.packed, "scales_and_zeros": mod.scales_and_zeros}
        if mod.qweight is not None:
            t["portable"] = mod.qweight
        info = {"kind": "int4", "group_size": mod.group_size}
    elif isinstance(mod, Int8Linear):
        t, info = {"qweight": mod.qweight, "scale": mod.scale}, {"kind": "int8"}
    elif isinstance(mod, Fp8Linear):
        t, info = {"qweight": mod.qweight, "w_scale_row": mod.w_scale_row}, {"kind": "fp8"}
    else:
        raise TypeError(f"no cached state for {type(mod).__name__}")
    if mod.bias is not None:
        t["bias"] = mod.bias.detach()
    info["shape"] = [mod.out_features, mod.in_features]
    return t, info


def module_from_state(t: dict[str, torch.Tensor], info: dict, device, cfg: QuantConfig,
                      model_dtype: torch.dtype) -> nn.Module | tuple[Int8Embedding, Int8Linear]:
    """The module `module_state` described (kind "int8-tied": the (embedding, head) pair)."""
    device = torch.device(device)
    fmt = {"int4": "4bit", "int8": "8bit", "int8-tied": "8bit"}.get(info["kind"])
    dense = default_dense_min_m(device, fmt) if cfg.dense_min_m == "auto" and fmt else cfg.dense_min_m
    n, k = info["shape"]
    bias = t.get("bias")
    if info["kind"] == "int4":
        return Int4Linear.from_packed(t["packed"], t["scales_and_zeros"], info["group_size"], n, k, bias,
                                      device=device, dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype,
                                      portable=t.get("portable"))
    if info["kind"] == "int8":
        return Int8Linear(t["qweight"].to(device), t["scale"].to(device), bias, dense_min_m=dense,
                          cpu_compute_dtype=cfg.cpu_dtype)
    if info["kind"] == "int8-tied":
        return build_tied_int8(t["qweight"].to(device), t["scale"].to(device), bias, model_dtype,
                               dense_min_m=dense, cpu_compute_dtype=cfg.cpu_dtype)
    if info["kind"] == "fp8":
        return Fp8Linear(t["qweight"].to(device), t["w_scale_row"].to(device).t(), bias)
    raise ValueError(f"unknown cached module kind {info['kind']!r}")
