"""Quantize while reading: a meta-built model filled from a memory-mapped checkpoint, each
projection quantized on the target device as soon as its checkpoint tensors are in.

Without this the engine built the whole model in full precision, loaded it, then quantized
(peak: the full-precision model plus the quantized one). Here (setup.build_model, when
quantization is asked for and the checkpoint is not pre-quantized):
1. the model is built on the meta device; everything outside the nn.Linear modules to be
   quantized is allocated on the device (prequantized._materialize_unquantized; ties kept);
   a tied embedding / LM head to be stored in 8 bits is left unallocated too;
2. with a quantized-weights cache hit, the quantized modules are built on views of the mapped
   cache file (no copy), and the checkpoint's tensors for them are never read;
3. otherwise the checkpoint is streamed (views into its memory map, loader.iter_mapped_weights):
   tensors of a quantized module are buffered per module of ours (q/k/v -> qkv_proj, gate/up ->
   gate_up_proj), and when all its parts are in they are concatenated on the device in the model
   dtype (exactly what the dense load held), quantized, swapped in, and their file pages dropped.
Peak memory: the final model plus one fused layer in full precision (plus quantization
temporaries of that layer); the load report measures it (setup.py: peak_rss_*).
"""
from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn as nn

from ..memory import trim_heap
from .config import QuantConfig
from .embedding import build_tied_int8, tied_8bit_wanted, tied_pairs
from .prequantized import _materialize_params, _materialize_unquantized, _route
from .state import module_from_state, module_state
from .support import default_dense_min_m, supported_formats
from .swap import (_build, _plan, _quantize, _set_module, head_info, int8_heads, open_cache, planned_info,
                   quantize_head, tied_info, weight_bytes, write_cache)


def _noop(lo: int | None = None, hi: int | None = None) -> None:
    pass


class _Pending(nn.Module):
    """Stands in for a module whose tensors arrive later (keeps _materialize_unquantized off it)."""


def _loaded_names(name: str, n_parts: int, has_bias: bool) -> set[str]:
    names = ("weight", "bias") if has_bias else ("weight",)
    if n_parts > 1:
        return {f"{name}.{n}#{i}" for n in names for i in range(n_parts)}
    return {f"{name}.{n}" for n in names}


def load_streaming(model: nn.Module, weights, cfg: QuantConfig, device, hf_config, *, cache_dir=None,
                   cache_key: str | None = None) -> tuple[set[str], dict]:
    """Fill a meta-built native model; weights: iterable of (hf name, tensor, release).
    Returns (loaded names in expected_weights() naming, the quantization report)."""
    t0 = time.perf_counter()
    device = torch.device(device)
    reason = supported_formats(device)[cfg.format]
    if reason:
        raise ValueError(f"quantization={cfg.format!r} is not available on {device}: {reason}")
    targets, skipped = _plan(model, cfg, device)
    pairs = tied_pairs(model) if cfg.format != "fp8" and tied_8bit_wanted(cfg.tied_embedding, device) else []
    infos = {name: planned_info(cfg, m, g) for name, m, g in targets}
    for emb, head in pairs:
        infos[head] = tied_info(emb, model.get_submodule(head).weight.shape)
    heads = {h: model.get_submodule(h).weight.dtype for h in int8_heads(model, cfg, device)}  # untied, 8 bits
    for head in heads:
        infos[head] = head_info(model.get_submodule(head).weight.shape)
    report = {"format": cfg.format, "quantized": [n for n, _, _ in targets], "skipped": skipped,
              "group_sizes": {n: g for n, _, g in targets if g is not None}, "cache": None, "cache_path": None,
              "tied_embedding": None, "lm_head": None, "streamed": True}
    dense_bytes = sum(m.weight.numel() * m.weight.element_size() for _, m, _ in targets)
    path, identity, cached = open_cache(cfg, cache_dir, cache_key, device, bool(pairs), infos, report, bool(heads))
    for head in heads:
        w = model.get_submodule(head).weight
        dense_bytes += w.numel() * w.element_size()
        skipped.pop(head, None)
        report["quantized"].append(head)
        report["lm_head"] = {"name": head, "format": "8bit"}

    embeds = {}  # embedding name -> (head name, head bias, dtype) for 8-bit tied pairs
    for emb, head in pairs:
        e, h = model.get_submodule(emb), model.get_submodule(head)
        dense_bytes += e.weight.numel() * e.weight.element_size()
        embeds[emb] = (head, h.bias, e.weight.dtype)
        _set_module(model, emb, _Pending())
        skipped.pop(head, None)
        report["tied_embedding"] = {"embedding": emb, "head": head, "format": "8bit"}
    _materialize_unquantized(model, hf_config, device)
    target_names = {n for n, _, _ in targets}
    for name, mod in model.named_modules():  # Linears left dense (skip patterns, shapes) get memory
        if type(mod) is nn.Linear and name not in target_names | heads.keys() and name not in {
                h for h, _, _ in embeds.values()}:
            _materialize_params(mod, device, {})

    to_write: dict[str, dict[str, torch.Tensor]] = {}
    loaded: set[str] = set()
    if cached is not None:
        for name, mod, _ in targets:
            _set_module(model, name, module_from_state(cached[name], infos[name], device, cfg, mod.weight.dtype))
            loaded |= _loaded_names(name, len(_parts_of(model, name)), mod.bias is not None)
        for emb, (head, _, dtype) in embeds.items():
            e_new, h_new = module_from_state(cached[head], infos[head], device, cfg, dtype)
            _set_module(model, emb, e_new)
            _set_module(model, head, h_new)
        for head, dtype in heads.items():
            _set_module(model, head, module_from_state(cached[head], infos[head], device, cfg, dtype))
    feed = _Feed(model, targets, embeds, cfg, device, skip_quantized=cached is not None, to_write=to_write,
                 heads=heads)
    loaded |= model.load_weights(feed.others(weights))
    loaded |= feed.loaded
    if feed.pending:
        raise ValueError(f"checkpoint lacks weights of {sorted(feed.pending)[:4]}: parts present "
                         f"{ {n: sorted(p) for n, p in list(feed.pending.items())[:4]} }")
    if cached is None and embeds and not feed.embeds_done:
        raise ValueError(f"checkpoint lacks the embedding {sorted(embeds)}")
    if cached is None and heads.keys() - feed.heads_done:
        raise ValueError(f"checkpoint lacks the LM head {sorted(heads.keys() - feed.heads_done)}")
    loaded |= {f"{h}.weight" for h in heads}
    if cache_dir is not None and cached is None:
        write_cache(path, identity, to_write, infos)
    left = [n for n, x in list(model.named_parameters()) + list(model.named_buffers()) if x.is_meta]
    if left:
        raise ValueError(f"checkpoint lacks weights for {left[:6]}{'...' if len(left) > 6 else ''}")
    after = weight_bytes(model)
    quant_bytes = sum(sum(t.numel() * t.element_size() for t in p.values()) for p in
                      (to_write.values() if to_write else (module_state(model.get_submodule(n))[0] for n in infos)))
    report.update(bytes_after=after, bytes_before=after - quant_bytes + dense_bytes, seconds=time.perf_counter() - t0)
    return loaded, report


# Row block quantized at a time (bytes of float32): bounds the quantization temporaries, whatever
# the layer's size. Every format here is row-wise (int8 per row, int4 per group along a row, fp8
# per row), so block by block gives the same tensors as the whole matrix at once.
QUANT_CHUNK_BYTES = 1 << 20


def quantize_parts(cfg: QuantConfig, parts: list[tuple], g, dtype, device) -> dict[str, torch.Tensor]:
    """Quantize the (rows_i, K) parts of one fused layer in row blocks, each converted to the model
    dtype on the device first (what the dense load held); each part's file pages are dropped once
    it is done. -> the payload of swap._quantize for the concatenated weight."""
    if cfg.hqq:  # HQQ's early stop looks at the whole matrix's error: quantize it whole
        w = torch.cat([t.to(device, dtype) for t, _ in parts])
        return _quantize(cfg.format, w, g, cfg)
    n = sum(t.shape[0] for t, _ in parts)
    out: dict[str, torch.Tensor] = {}
    row = 0
    for t, release in parts:
        rows = max(1, QUANT_CHUNK_BYTES // (4 * t.shape[1]))
        row_bytes = t.shape[1] * t.element_size()
        for r in range(0, t.shape[0], rows):
            piece = _quantize(cfg.format, t[r:r + rows].to(device, dtype), g, cfg)
            release(r * row_bytes, (r + rows) * row_bytes)  # this block's file pages are done with
            if not out:  # outputs allocated once, filled in place: no pieces + cat fragmenting the heap
                out = {k: torch.empty((n, *v.shape[1:]), dtype=v.dtype, device=v.device) for k, v in piece.items()}
            for k, v in piece.items():
                out[k][row:row + v.shape[0]] = v
            row += piece[next(iter(piece))].shape[0]
        release()
    return out


def _parts_of(model: nn.Module, name: str) -> list[int]:
    last = name.rpartition(".")[2]
    fused = {f for f, _ in getattr(model, "PACKED", {}).values()}
    return model.shard_sizes(last) if last in fused else [0]


class _Feed:
    """Routes the checkpoint stream: quantized modules' tensors are buffered and quantized per module,
    the rest flows on to model.load_weights (file pages dropped once each tensor is consumed)."""

    def __init__(self, model, targets, embeds, cfg, device, *, skip_quantized: bool, to_write: dict, heads: dict):
        self.model, self.cfg, self.device = model, cfg, device
        self.targets = {n: (m, g, len(_parts_of(model, n))) for n, m, g in targets}
        self.embeds, self.skip_quantized, self.to_write = embeds, skip_quantized, to_write
        self.pending: dict[str, dict[int, dict[str, tuple]]] = {}
        self.loaded: set[str] = set()
        self.embeds_done: set[str] = set()
        self.heads, self.heads_done = heads, set()  # untied LM heads stored in 8 bits: name -> dtype
        self.packed = getattr(model, "PACKED", {})

    def others(self, weights):
        for hf_name, tensor, release in weights:
            ours, idx, suffix = _route(hf_name, self.packed)
            prefix = hf_name.rpartition(".")[0]
            if prefix in self.embeds and suffix == "weight":
                if not self.skip_quantized:
                    self._finish_embedding(prefix, tensor)
                release()
                continue
            if ours in self.heads and suffix == "weight":
                if not self.skip_quantized:
                    self._finish_head(ours, tensor)
                release()
                continue
            if ours in self.targets and suffix in ("weight", "bias"):
                if self.skip_quantized:
                    release()
                    continue
                self.pending.setdefault(ours, {}).setdefault(idx, {})[suffix] = (tensor, release)
                self._maybe_finish(ours)
                continue
            yield hf_name, tensor
            release()

    def _maybe_finish(self, name: str) -> None:
        mod, g, n_parts = self.targets[name]
        parts = self.pending[name]
        need = {"weight", "bias"} if mod.bias is not None else {"weight"}
        if len(parts) < n_parts or any(not need <= p.keys() for p in parts.values()):
            return
        order = [parts[i] for i in range(n_parts)]
        shape = (sum(p["weight"][0].shape[0] for p in order), *order[0]["weight"][0].shape[1:])
        if shape != tuple(mod.weight.shape) or any(p["weight"][0].dim() != 2 for p in order):
            raise ValueError(f"{name}: checkpoint weight shape {shape} != model {tuple(mod.weight.shape)}")
        bias = None
        if mod.bias is not None:
            bias = torch.cat([p["bias"][0].to(self.device, mod.bias.dtype) for p in order]).clone()
        payload = quantize_parts(self.cfg, [p["weight"] for p in order], g, mod.weight.dtype, self.device)
        new = _build(self.cfg.format, payload, g, bias, self.device, self.cfg)
        del payload
        _set_module(self.model, name, new)
        self.to_write[name] = module_state(new)[0]
        for p in order:
            for _, release in p.values():
                release()
        del self.pending[name]
        self.loaded |= _loaded_names(name, n_parts, mod.bias is not None)
        trim_heap()

    def _finish_head(self, head: str, tensor: torch.Tensor) -> None:
        """An untied LM head -> per-row int8 Int8Linear, quantized in row blocks (bounded temporaries:
        Qwen2.5-Coder-7B's head is 2.2 GB in float32)."""
        int8 = dataclasses.replace(self.cfg, format="8bit", hqq=False)
        p = quantize_parts(int8, [(tensor, _noop)], None, self.heads[head], self.device)
        new = quantize_head(None, self.device, self.cfg, quantized=(p["qweight"], p["scale"]))
        _set_module(self.model, head, new)
        self.to_write[head] = module_state(new)[0]
        self.heads_done.add(head)
        trim_heap()

    def _finish_embedding(self, emb: str, tensor: torch.Tensor) -> None:
        head, bias, dtype = self.embeds[emb]
        int8 = dataclasses.replace(self.cfg, format="8bit", hqq=False)  # per-row int8 (embedding.py)
        p = quantize_parts(int8, [(tensor, _noop)], None, dtype, self.device)
        dense = default_dense_min_m(self.device, "8bit") if self.cfg.dense_min_m == "auto" else self.cfg.dense_min_m
        e_new, h_new = build_tied_int8(p["qweight"], p["scale"], bias, dtype, dense_min_m=dense,
                                       cpu_compute_dtype=self.cfg.cpu_dtype)
        _set_module(self.model, emb, e_new)
        _set_module(self.model, head, h_new)
        self.to_write[head] = module_state(h_new)[0]
        self.embeds_done.add(emb)
        trim_heap()
