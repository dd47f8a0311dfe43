"""A whole pure-decode step of the lean CPU forward in one C call (cpu_decode_step.c).

The lean forward (lean.py) runs a step as ~25 torch ops per layer; at small model sizes their
dispatch costs more than the matmuls (31M, batch 1: ~1.1 ms per step of which ~0.3 ms is matmul).
`FusedDecode` hands the layers of a pure-decode step (every row one new token, every slot real) to
one C function that runs them in one OpenMP region with our CPU kernels, reading and writing the
layer's paged KV pool directly. Embedding, final norm and LM head stay in Python.

Applies (`FusedDecode.build` says why not otherwise) to the native decoder on the CPU with float32
or bf16 activations, each linear int4 on the VNNI path, int8 (Int8Linear on the CPU kernel path)
or a float32 / bf16 nn.Linear, a float32 or bf16 KV pool on the torch_cpu backend, full-width
rotary, and our kernel library loaded (quant/vnni.py). Per step it runs for 1..MAX_BATCH rows.

Not bit-identical to the lean forward: the int8 layers use the VNNI kernel at every batch size (the
module path uses it at one row only), sums run in another order and exp is a polynomial; a bf16
model's residual stream and intermediates stay float32 inside the step (its module path rounds
each to bf16: the fused step is the closer of the two to the float32 computation). Tests
(tests/engine/test_fused_decode.py) bound the difference from the lean forward on every step and
compare greedy tokens; `EngineConfig.cpu_fused_decode=False` turns it off.
"""
from __future__ import annotations

import ctypes

import torch
from torch import nn

from ..attention import torch_cpu
from ..attention.metadata import AttentionMetadata
from ..layers.bf16_linear import Bf16Linear
from ..layers.f32_linear import F32Linear
from ..quant import vnni

MAX_BATCH = 256  # rows per step: faster than the lean forward up to 128 rows at 31M (BENCHMARKS.md)
LIN_INT4, LIN_INT8, LIN_F32, LIN_BF16 = 1, 2, 3, 4

P, I64, F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double


class _Lin(ctypes.Structure):
    _fields_ = [("kind", I64), ("N", I64), ("K", I64), ("g", I64), ("w", P), ("sz", P), ("bias", P)]


class _Layer(ctypes.Structure):
    _fields_ = [("ln1", P), ("ln2", P), ("q_norm", P), ("k_norm", P), ("eps1", F64), ("eps2", F64),
                ("eps_qk", F64), ("qkv", _Lin), ("o", _Lin), ("gate_up", _Lin), ("down", _Lin),
                ("k_cache", P), ("v_cache", P)]


class _Spec(ctypes.Structure):
    _fields_ = [("layers", I64), ("H", I64), ("Hq", I64), ("Hkv", I64), ("D", I64), ("I", I64),
                ("block_size", I64), ("kv_bf16", I64), ("max_pos", I64), ("scale", F64)]


counters = {"steps": 0}  # fused steps run (tests, profiling)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _f32(t: torch.Tensor | None, keep: list) -> torch.Tensor | None:
    """t as a contiguous float32 tensor: itself, or a copy (a bf16 model's norm weights and biases:
    a few KiB per layer); either way held in `keep`, so the pointer the C structs get stays valid."""
    if t is None:
        return None
    keep.append(t if t.dtype == torch.float32 and t.is_contiguous() else t.detach().float().contiguous())
    return keep[-1]


def _held(keep: list, *ts: torch.Tensor) -> int:
    """The first tensor's address, every tensor held in `keep` (the structs outlive no weight)."""
    keep.extend(ts)
    return ts[0].data_ptr()


def _linear(mod: nn.Module, keep: list) -> tuple[_Lin | None, str]:
    """(the C description of a linear layer, "") or (None, why the fused step cannot run it)."""
    name = type(mod).__name__
    bias = getattr(mod, "bias", None)
    if bias is not None and bias.dtype not in (torch.float32, torch.bfloat16):
        return None, f"{name} bias in {bias.dtype}"
    b = _ptr(_f32(bias, keep))
    if name == "Int4Linear":
        if getattr(mod, "vnni_max_m", 0) < MAX_BATCH or vnni.layer_problem(mod) or not mod.packed.is_contiguous():
            return None, "an int4 layer not on the VNNI kernel"
        return _Lin(LIN_INT4, mod.out_features, mod.in_features, mod.group_size, _held(keep, mod.packed),
                    _held(keep, mod.scales_and_zeros), b), ""
    if name == "Int8Linear":
        if not getattr(mod, "vnni_max_m", 0) or vnni.layer_problem(mod) or not mod.qweight.is_contiguous():
            return None, "an int8 layer not on the VNNI kernel"
        return _Lin(LIN_INT8, mod.out_features, mod.in_features, 0, _held(keep, mod.qweight), _held(keep, mod.scale),
                    b), ""
    if type(mod) in (nn.Linear, Bf16Linear, F32Linear):
        w = mod.weight
        if w.dtype == torch.float32 and w.is_contiguous() and w.shape[1] % 16 == 0:
            return _Lin(LIN_F32, w.shape[0], w.shape[1], 0, _held(keep, w), None, b), ""
        if w.dtype == torch.bfloat16 and w.is_contiguous() and w.shape[1] % 32 == 0:
            return _Lin(LIN_BF16, w.shape[0], w.shape[1], 0, _held(keep, w), None, b), ""
        return None, f"a {w.dtype} Linear {tuple(w.shape)} (float32 / bf16 with in_features % 32 == 0 only)"
    return None, f"a {name} layer"


class FusedDecode:
    def __init__(self, model, lib):
        s, m = model.spec, model.model
        self.lib = lib
        self.model = model
        self._keep: list[torch.Tensor] = []  # every tensor the structs point at (and bf16 models' float32 copies)
        keep = self._keep
        self.cos, self.sin = _f32(m.rotary.cos, keep), _f32(m.rotary.sin, keep)
        self.attn = [layer.self_attn.attn for layer in m.layers]
        a0 = self.attn[0]
        self.spec = _Spec(len(m.layers), s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim,
                          m.layers[0].mlp.down_proj.in_features, 0, 0, self.cos.shape[0], a0.scale)
        self.layers = (_Layer * len(m.layers))()
        self._spec_at, self._layers_at = ctypes.addressof(self.spec), ctypes.addressof(self.layers)
        self._pools: list | None = None  # the (k_cache, v_cache) tensors the layer structs point at
        for i, layer in enumerate(m.layers):
            a, mlp = layer.self_attn, layer.mlp
            L = self.layers[i]
            L.ln1 = _ptr(_f32(layer.input_layernorm.weight, keep))
            L.ln2 = _ptr(_f32(layer.post_attention_layernorm.weight, keep))
            L.eps1, L.eps2 = layer.input_layernorm.eps, layer.post_attention_layernorm.eps
            if a.qk_norm:
                L.q_norm, L.k_norm = _ptr(_f32(a.q_norm.weight, keep)), _ptr(_f32(a.k_norm.weight, keep))
                L.eps_qk = a.q_norm.eps
            for field, mod in (("qkv", a.qkv_proj), ("o", a.o_proj), ("gate_up", mlp.gate_up_proj),
                               ("down", mlp.down_proj)):
                setattr(L, field, _linear(mod, keep)[0])

    @classmethod
    def build(cls, model) -> tuple["FusedDecode | None", str]:
        """(the fused step, "") or (None, why it does not apply). `model` already passed the lean
        forward's checks (lean.why_not)."""
        lib, why = vnni._load()
        if lib is None:
            return None, f"our CPU kernels cannot run here: {why}"
        why = _why_not(model)
        return (None, why) if why else (cls(model, lib), "")

    def _bind_pools(self) -> bool:
        """Point the layer structs at the current KV pools (allocated after load; replaced only by
        a runner reset). False when a pool is not one the step takes."""
        pools = [(a.k_cache, a.v_cache) for a in self.attn]
        if self._pools is not None and all(k is pk and v is pv for (k, v), (pk, pv) in zip(pools, self._pools)):
            return True
        self._pools = None
        k0 = pools[0][0]
        if k0.dim() != 4 or k0.dtype not in (torch.float32, torch.bfloat16):
            return False
        for L, (k, v) in zip(self.layers, pools):
            if k.shape != k0.shape or v.shape != k0.shape or k.dtype != k0.dtype or v.dtype != k0.dtype:
                return False
            if not (k.is_contiguous() and v.is_contiguous()):
                return False
            L.k_cache, L.v_cache = k.data_ptr(), v.data_ptr()
        self.spec.block_size, self.spec.kv_bf16 = k0.shape[1], int(k0.dtype == torch.bfloat16)
        self._pools = pools
        return True

    def applies(self, meta: AttentionMetadata, rows: int) -> bool:
        return (meta.is_pure_decode and rows == meta.num_seqs and 1 <= rows <= MAX_BATCH
                and all(a.backend is torch_cpu and a.k_scale is None for a in self.attn)
                and torch_cpu._all_slots_valid(meta.slot_mapping) and self._bind_pools())

    def run(self, h: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> None:
        """h (B, hidden) float32, the embedded tokens: every layer applied in place (a bf16 model's
        caller passes its embeddings as float32)."""
        if h.dtype != torch.float32 or not h.is_contiguous():
            raise ValueError(f"the fused decode step takes contiguous float32 rows, got {h.dtype}")
        pos = positions if positions.dtype == torch.int64 else positions.long()
        tables, lens, slots = meta.block_tables, meta.seq_lens, meta.slot_mapping
        tables = tables if tables.dtype == torch.int32 and tables.is_contiguous() else tables.int().contiguous()
        lens = lens if lens.dtype == torch.int32 else lens.int()
        slots = slots if slots.dtype == torch.int64 else slots.long()
        rc = self.lib.decode_step(self._spec_at, self._layers_at, h.shape[0], h.data_ptr(), self.cos.data_ptr(),
                                  self.sin.data_ptr(), pos.contiguous().data_ptr(), slots.contiguous().data_ptr(),
                                  tables.data_ptr(), tables.shape[1], lens.contiguous().data_ptr(),
                                  torch.get_num_threads())
        if rc:
            raise RuntimeError(f"the fused decode step refused its inputs (code {rc})")
        if torch_cpu._mirrors:  # this model's dense KV copies (the lean path's) no longer extend: drop
            for a in self.attn:  # them (only this model's: other engines in the process keep theirs)
                torch_cpu._mirrors.pop(id(a.k_cache), None)
        counters["steps"] += 1


def _why_not(model) -> str:
    s, m = model.spec, model.model
    with torch.inference_mode():
        act = m.embed_tokens(torch.zeros(1, dtype=torch.long, device=m.norm.weight.device)).dtype
    if act not in (torch.float32, torch.bfloat16):
        return f"activations in {act} (the fused step takes float32 and bf16 models)"
    rot = m.rotary
    if rot.cos.dim() != 2 or rot.cos.shape[1] != s.head_dim:
        return "rotary tables not (max_positions, head_dim)"
    if s.hidden_size % 16 or s.head_dim % 16 or s.num_heads % s.num_kv_heads:
        return f"shapes hidden {s.hidden_size}, head_dim {s.head_dim}"
    inter = m.layers[0].mlp.down_proj.in_features
    for i, layer in enumerate(m.layers):
        a, mlp = layer.self_attn, layer.mlp
        norms = [layer.input_layernorm, layer.post_attention_layernorm] + ([a.q_norm, a.k_norm] if a.qk_norm else [])
        if any(n.weight.dtype not in (torch.float32, torch.bfloat16) for n in norms):
            return "norm weights neither float32 nor bf16"
        if a.qk_norm and a.q_norm.eps != a.k_norm.eps:
            return "q_norm and k_norm with different eps"
        if mlp.down_proj.in_features != inter:
            return "layers with different intermediate sizes"
        for mod in (a.qkv_proj, a.o_proj, mlp.gate_up_proj, mlp.down_proj):
            lin, why = _linear(mod, [])
            if lin is None:
                return f"layer {i}: {why}"
    return ""
