"""Load a pre-quantized AWQ / GPTQ 4-bit checkpoint into a native model as Int4Linear layers.

setup.build_model builds the model on the meta device when config.json has a supported
`quantization_config` (prequant_config.py), so the dense weights of quantized projections are
never allocated; `load_prequantized` then:
1. allocates on the device every parameter outside nn.Linear modules (embeddings, norms; ties
   kept) and rebuilds computed buffers (the rotary cos/sin table);
2. streams the checkpoint: tensors of nn.Linear modules (HF `...q_proj.qweight / qzeros / scales
   [/ g_idx] [/ bias]`, or `.weight` where the checkpoint keeps a layer dense, e.g. lm_head) are
   buffered per module of ours (q/k/v -> qkv_proj, gate/up -> gate_up_proj, the model's PACKED
   map); everything else goes straight through the model's own load_weights;
3. as soon as all parts of a module are in (else at the end), converts each part (convert.py),
   fuses them in the model's order with Int4Weights.cat (biases too) and swaps in an Int4Linear
   on the device; modules whose parts are dense are allocated and loaded as before.
Peak memory: int4 layers plus the unquantized rest; on the host, the packed tensors of modules
whose parts are not all read yet (with a sharded checkpoint, at most about one shard's worth).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from ..layers.rotary import RotaryEmbedding
from .config import QuantConfig
from .convert import awq_to_int4, gptq_to_int4
from .int4 import Int4Weights
from .int4_linear import Int4Linear
from .prequant_config import PrequantSpec
from .support import default_dense_min_m
from .swap import weight_bytes

# Kernel settings of the Int4Linear layers built here: the defaults of quantization="4bit" (bf16
# activations into the CPU kernel, dense matmul from M >= default_dense_min_m). Tests swap in
# float32 / dense_min_m=1 to compare against a dense engine in float32.
KERNELS = QuantConfig(format="4bit")

QUANT_KEYS = ("qweight", "qzeros", "scales")


class _Target:
    """One nn.Linear of ours and the checkpoint tensors buffered for its parts."""

    def __init__(self, name: str, module: nn.Linear, sizes: list[int], fused: bool):
        self.name, self.module, self.sizes, self.fused = name, module, sizes, fused
        self.parts: dict[int, dict[str, tuple[str, torch.Tensor]]] = {}  # idx -> suffix -> (hf name, tensor)

    def ready(self, spec: PrequantSpec) -> bool:
        """All parts quantized and complete (g_idx awaited for GPTQ: it is optional, so else at the end)."""
        need = set(QUANT_KEYS) | ({"bias"} if self.module.bias is not None else set())
        need |= {"g_idx"} if spec.method == "gptq" else set()
        return len(self.parts) == len(self.sizes) and all(need <= p.keys() for p in self.parts.values())


def _targets(model: nn.Module) -> dict[str, _Target]:
    packed = getattr(model, "PACKED", {})
    fused_names = {f for f, _ in packed.values()}
    out = {}
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear:
            last = name.rpartition(".")[2]
            fused = last in fused_names
            out[name] = _Target(name, mod, model.shard_sizes(last) if fused else [mod.out_features], fused)
    return out


def _route(hf_name: str, packed: dict) -> tuple[str, int, str]:
    """HF tensor name -> (our module name, part index, tensor suffix)."""
    prefix, _, suffix = hf_name.rpartition(".")
    parent, _, last = prefix.rpartition(".")
    if last in packed:
        fused, idx = packed[last]
        return (f"{parent}.{fused}" if parent else fused), idx, suffix
    return prefix, 0, suffix


def _materialize_params(mod: nn.Module, device, memo: dict) -> None:
    """Replace the module's own meta parameters by empty ones on `device` (shared ones stay shared)."""
    for pname, p in list(mod.named_parameters(recurse=False)):
        if p.is_meta:
            if id(p) not in memo:  # memo keeps the meta tensor alive so its id stays unique
                # torch.empty, not empty_like: empty_like of a meta tensor writes the new memory
                # (all its pages resident before the checkpoint is even read)
                fresh = torch.empty(p.shape, dtype=p.dtype, device=device)
                memo[id(p)] = (p, nn.Parameter(fresh, requires_grad=p.requires_grad))
            setattr(mod, pname, memo[id(p)][1])


def _materialize_unquantized(model: nn.Module, hf_config, device) -> None:
    memo: dict = {}
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear:
            continue
        _materialize_params(mod, device, memo)
        if isinstance(mod, RotaryEmbedding) and mod.cos.is_meta:
            with torch.device(device):  # computed at construction: rebuild it from its shape
                fresh = RotaryEmbedding(hf_config, mod.cos.shape[1], mod.cos.shape[0])
            mod.cos, mod.sin = fresh.cos, fresh.sin
        for bname, b in mod.named_buffers(recurse=False):
            if b.is_meta:
                raise RuntimeError(f"buffer {name}.{bname} is computed at construction and cannot be rebuilt after "
                                   "a meta-device build: teach prequantized.py to rebuild it")
        for attr, v in list(vars(mod).items()):
            if isinstance(v, torch.Tensor) and v.is_meta and v.numel() == 0:  # placeholders (KV cache views)
                setattr(mod, attr, torch.empty(v.shape, dtype=v.dtype, device=device))
    for mod in model.modules():  # a Linear tied to an embedding (lm_head) follows it
        if type(mod) is nn.Linear:
            for pname, p in list(mod.named_parameters(recurse=False)):
                if p.is_meta and id(p) in memo:
                    setattr(mod, pname, memo[id(p)][1])


def _convert_part(t: _Target, idx: int, spec: PrequantSpec, device) -> Int4Weights:
    part = t.parts.get(idx, {})
    where = next(iter(part.values()))[0].rpartition(".")[0] if part else f"{t.name} part {idx}"
    missing = [k for k in QUANT_KEYS if k not in part]
    if missing or "weight" in part:
        raise ValueError(f"checkpoint module {where}: expected {spec.method.upper()} tensors {list(QUANT_KEYS)}, "
                         f"found {sorted(part)}; the checkpoint is incomplete or mixes quantized and dense parts")
    # Unpack on the target device: on a GPU the conversion is then far faster than on the CPU.
    qweight, qzeros, scales = (part[k][1].to(device) for k in QUANT_KEYS)
    k = t.module.in_features
    groups = 1 if spec.group_size == -1 else k // spec.group_size
    if spec.group_size != -1 and k % spec.group_size or scales.shape[0] != groups:
        raise ValueError(f"{where}: scales {tuple(scales.shape)} do not match group_size {spec.group_size} of "
                         f"in_features {k} in config.json's quantization_config")
    try:
        if spec.method == "awq":
            w = awq_to_int4(qweight, qzeros, scales)
        else:
            g_idx = part["g_idx"][1].to(device) if "g_idx" in part else None
            w = gptq_to_int4(qweight, qzeros, scales, g_idx, checkpoint_format=spec.checkpoint_format)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if (w.out_features, w.in_features) != (t.sizes[idx], k):
        raise ValueError(f"{where}: quantized weight is {w.out_features}x{w.in_features}, "
                         f"the model expects {t.sizes[idx]}x{k}")
    return w


def _finish(model, t: _Target, spec: PrequantSpec, device, kernels: QuantConfig) -> set[str]:
    """Swap in the Int4Linear (or load the dense module); returns the loaded names as load_weights would."""
    parts = [t.parts.get(i, {}) for i in range(len(t.sizes))]
    if not any("qweight" in p for p in parts):  # stored dense (lm_head, modules_to_not_convert)
        _materialize_params(t.module, device, {})
        return model.load_weights([item for p in parts for item in p.values()])
    weights = [_convert_part(t, i, spec, device) for i in range(len(t.sizes))]
    fused = weights[0] if len(weights) == 1 else Int4Weights.cat(weights)
    bias = None
    if t.module.bias is not None:
        lacking = [i for i, p in enumerate(parts) if "bias" not in p]
        if lacking:
            raise ValueError(f"checkpoint lacks the bias of {t.name} (parts {lacking})")
        bias = torch.cat([p["bias"][1] for p in parts]).to(t.module.bias.dtype)
    elif any("bias" in p for p in parts):
        raise ValueError(f"checkpoint has a bias for {t.name}, which the model's config does not have")
    dense = default_dense_min_m(device, "4bit") if kernels.dense_min_m == "auto" else kernels.dense_min_m
    new = Int4Linear(fused, bias, device=device, dense_min_m=dense, cpu_compute_dtype=kernels.cpu_dtype)
    parent, _, child = t.name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    t.parts.clear()  # free the buffered checkpoint tensors
    names = ("weight", "bias") if bias is not None else ("weight",)
    if t.fused:
        return {f"{t.name}.{n}#{i}" for n in names for i in range(len(t.sizes))}
    return {f"{t.name}.{n}" for n in names}


def load_prequantized(model: nn.Module, weights, spec: PrequantSpec, device, hf_config,
                      kernels: QuantConfig | None = None) -> set[str]:
    """Fill a meta-built native model from a pre-quantized checkpoint; returns the loaded names
    (the model's expected_weights() naming). weights: iterable of (hf_name, tensor)."""
    t0 = time.perf_counter()
    kernels = kernels or KERNELS
    device = torch.device(device)
    _materialize_unquantized(model, hf_config, device)
    packed = getattr(model, "PACKED", {})
    targets = _targets(model)
    pending = dict(targets)
    loaded: set[str] = set()

    def others():  # tensors of non-Linear modules, streamed into load_weights; Linear ones buffered
        for name, tensor in weights:
            ours, idx, suffix = _route(name, packed)
            t = pending.get(ours)
            if t is None or idx >= len(t.sizes):
                if ours in targets and ours not in pending:
                    raise ValueError(f"checkpoint tensor {name!r} arrived after its module {ours} was complete")
                yield name, tensor
                continue
            t.parts.setdefault(idx, {})[suffix] = (name, tensor)
            if t.ready(spec):
                loaded.update(_finish(model, pending.pop(ours), spec, device, kernels))

    loaded |= model.load_weights(others())
    for t in list(pending.values()):
        loaded |= _finish(model, t, spec, device, kernels)
    left = [n for n, x in list(model.named_parameters()) + list(model.named_buffers()) if x.is_meta]
    if left:
        raise ValueError(f"checkpoint lacks weights for {left[:6]}{'...' if len(left) > 6 else ''}")
    model._prequant_seconds = time.perf_counter() - t0
    return loaded


def prequantized_report(spec: PrequantSpec, model: nn.Module) -> dict:
    """load_report["quantization"] for a pre-quantized checkpoint (keys as quantize_model_'s report)."""
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, Int4Linear)}
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    tied = {i for i, c in counts.items() if c > 1}
    after = weight_bytes(model)
    elem = next(model.parameters()).element_size()
    int4_bytes = sum(m.packed.numel() * m.packed.element_size() + m.scales_and_zeros.numel()
                     * m.scales_and_zeros.element_size() for m in quantized.values())
    dense_bytes = sum(m.in_features * m.out_features * elem for m in quantized.values())
    return {
        "format": "4bit", "prequantized": True, "method": spec.method, "checkpoint_format": spec.checkpoint_format,
        "checkpoint_group_size": spec.group_size, "sym": spec.sym, "description": spec.describe(),
        "quantized": list(quantized),
        "skipped": {n: "weight tied to the embedding (dense)" if id(m.weight) in tied else
                    "stored unquantized in the checkpoint" for n, m in model.named_modules() if type(m) is nn.Linear},
        "group_sizes": {n: m.group_size for n, m in quantized.items()},
        "cache": None, "cache_path": None,
        "bytes_after": after, "bytes_before": after - int4_bytes + dense_bytes,  # before: the dense equivalent
        "seconds": getattr(model, "_prequant_seconds", None),
    }
