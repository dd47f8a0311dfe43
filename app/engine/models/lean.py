"""The lean CPU forward of the native decoder: one step as plain function calls over a prebuilt
tuple per layer, instead of ~12 nn.Module __call__s per layer.

At batch 1 on the CPU a decode step's matmuls are a few milliseconds and everything around them
(module calls, attribute look-ups through nn.Module.__getattr__, per-layer bookkeeping) costs
about as much again. This path runs the same ops in the same order on the same tensors as
DecoderForCausalLM.forward (decoder.py), so its hidden states equal the module path's bit for
bit; tests compare them. The modules stay what they are (loading, quantization swaps, CUDA, the
reference path); this only holds references to their weights and bound kernels (lean_parts.py).

`LeanDecoder.build(model)` returns it or the reason it does not apply (not a native decoder,
not on the CPU, torch.compile'd pieces, hooks); `forward` returns None for a step it will not
run (hooks registered since), and the runner then uses the module path.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..attention import torch_cpu
from ..attention.backend import PagedAttention
from ..attention.metadata import AttentionMetadata
from ..attention.torch_cpu_decode import DecodeStep
from ..attention.torch_ref import FP8_DTYPES
from ..layers.activation import SiluAndMul
from ..layers.norm import RMSNorm
from ..layers.rotary import apply_rotary
from .decoder import MLP, Attention, DecoderForCausalLM, DecoderLayer, DecoderModel
from .lean_parts import bind_linear, global_hooks, has_hooks, make_rms

Fn = Callable[[torch.Tensor], torch.Tensor]


class _Layer(NamedTuple):
    ln1: Fn  # input_layernorm
    qkv: Fn
    q_norm: Fn | None  # Qwen3 QK-norm
    k_norm: Fn | None
    o: Fn
    ln2: Fn  # post_attention_layernorm
    gate_up: Fn
    down: Fn
    attn: object  # the layer's PagedAttention (its KV pool, scales and backend are read per step)


class LeanDecoder:
    def __init__(self, model: DecoderForCausalLM):
        s = model.spec
        self.num_heads, self.num_kv_heads, self.head_dim = s.num_heads, s.num_kv_heads, s.head_dim
        self.q_size, self.kv_size = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        self.qk_norm = s.qk_norm
        self.half = s.head_dim // 2
        m = model.model
        self.embed = m.embed_tokens.forward
        self.rotary = m.rotary
        self.norm = make_rms(m.norm.weight, m.norm.eps)
        self.head = bind_linear(model.lm_head)
        self.layers = [self._bind(layer) for layer in m.layers]
        self.attn_layers = [layer.attn for layer in self.layers]
        self.fused = None  # FusedDecode (fused_decode.py): pure-decode steps in one C call, when set

    @staticmethod
    def _bind(layer) -> _Layer:
        a, mlp = layer.self_attn, layer.mlp
        qn = make_rms(a.q_norm.weight, a.q_norm.eps) if a.qk_norm else None
        kn = make_rms(a.k_norm.weight, a.k_norm.eps) if a.qk_norm else None
        return _Layer(make_rms(layer.input_layernorm.weight, layer.input_layernorm.eps), bind_linear(a.qkv_proj),
                      qn, kn, bind_linear(a.o_proj),
                      make_rms(layer.post_attention_layernorm.weight, layer.post_attention_layernorm.eps),
                      bind_linear(mlp.gate_up_proj), bind_linear(mlp.down_proj), a.attn)

    @classmethod
    def build(cls, model) -> tuple["LeanDecoder | None", str]:
        """(the lean forward, "") or (None, why it does not apply)."""
        why = why_not(model)
        return (None, why) if why else (cls(model), "")

    # ----- one step ------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata):
        """(T,) ids and positions -> (T, hidden) final-normed hidden states, or None (not run)."""
        if global_hooks():
            return None
        h = self.embed(input_ids)  # (T, hidden)
        fused = self.fused
        if fused is not None and fused.applies(meta, h.shape[0]):
            if h.dtype is torch.float32:
                fused.run(h, positions, meta)  # every layer, in place
                return self.norm(h)
            h32 = h.float()  # a bf16 model: float32 inside the step, back to bf16 for the final norm
            fused.run(h32, positions, meta)
            return self.norm(h32.to(h.dtype))
        first = self.attn_layers[0]
        # torch_cpu's store_and_attend called directly (PagedAttention.forward does just that, after
        # a check that only concerns fp8 pools); any other backend through PagedAttention.forward
        direct = first.backend is torch_cpu and first.k_cache.dtype not in FP8_DTYPES and all(
            a.backend is torch_cpu for a in self.attn_layers)
        step = DecodeStep(meta) if direct and DecodeStep.applies(meta, first.k_cache) else None
        T = h.shape[0]
        rot = self.rotary
        table = (rot.cos[positions], rot.sin[positions])  # (T, D) fp32, shared by every layer
        cs: dict = {}  # dtype -> (cos, sin) (T, 1, D), as RotaryEmbedding._table makes them
        Hq, Hkv, D, qs, kvs = self.num_heads, self.num_kv_heads, self.head_dim, self.q_size, self.kv_size
        for ln1, qkv_fn, q_norm, k_norm, o_fn, ln2, gate_up, down, a in self.layers:
            qkv = qkv_fn(ln1(h))
            qk, v = qkv.split([qs + kvs, kvs], dim=-1)
            v = v.reshape(T, Hkv, D)
            if q_norm is not None:
                q, k = qk.split([qs, kvs], dim=-1)
                q, k = q_norm(q.reshape(T, Hq, D)), k_norm(k.reshape(T, Hkv, D))
                cos, sin = cs.get(q.dtype) or cs.setdefault(q.dtype, _table(table, q.dtype))
                q, k = apply_rotary(q, k, cos, sin)
            else:  # RotaryEmbedding.forward_qk: q and k heads rotated together
                qk = qk.reshape(T, Hq + Hkv, D)
                cos, sin = cs.get(qk.dtype) or cs.setdefault(qk.dtype, _table(table, qk.dtype, self.half))
                # = qk * cos + _rotate_half(qk) * sin exactly: rotate_half is the halves swapped with
                # the first negated, and (-a) * b == a * (-b) in IEEE arithmetic; one roll instead
                # of chunk + neg + cat (sin here has its first half negated)
                r = qk * cos + qk.roll(self.half, -1) * sin
                q, k = r[:, :Hq], r[:, Hq:]
            if step is not None:
                o = step.attend(q, k, v, a)
            elif direct:
                o = torch_cpu.store_and_attend(q, k, v, a.k_cache, a.v_cache, meta, a.scale, a.k_scale, a.v_scale)
            else:
                o = a.forward(q, k, v, meta)
            h = h + o_fn(o.reshape(T, qs))
            gate, up = gate_up(ln2(h)).chunk(2, dim=-1)
            h = h + down(F.silu(gate) * up)
        return self.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()  # (rows, vocab), as DecoderForCausalLM.compute_logits


def _table(table, dtype, negate_first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) (T, 1, D) in `dtype`, as RotaryEmbedding._table; with negate_first=D/2 the first
    half of sin negated (for the rolled rotate-half above)."""
    cos, sin = table[0].to(dtype).unsqueeze(1), table[1].to(dtype).unsqueeze(1)
    if negate_first:
        sin = torch.cat((-sin[..., :negate_first], sin[..., negate_first:]), dim=-1)
    return cos, sin


def why_not(model) -> str:
    """Why the lean forward does not apply to `model` ("" when it does)."""
    if type(model) is not DecoderForCausalLM:
        return f"{type(model).__name__} is not the native decoder"
    if model.model.norm.weight.device.type != "cpu":
        return "the lean forward is for the CPU"
    m = model.model
    if m.rotary._apply_rotary is not None:
        return "torch.compile'd pieces (enable_compilation)"
    for name, mod in model.named_modules():
        if "forward" in vars(mod):
            return f"{name or 'model'} has a replaced forward (torch.compile'd pieces?)"
        if has_hooks(mod):
            return f"{name or 'model'} has hooks"
        last = name.rsplit(".", 1)[-1]
        if not _EXPECTED.get("N" if last.isdigit() else last, lambda t: True)(type(mod)):
            return f"{name} is a {type(mod).__name__}, not the module the lean forward replicates"
    return ""


# Last name component -> the exact type whose forward the lean path replays (subclasses may differ).
_EXPECTED = {
    "model": lambda t: t is DecoderModel,
    "N": lambda t: t is DecoderLayer,  # model.layers.N
    "self_attn": lambda t: t is Attention,
    "mlp": lambda t: t is MLP,
    "act": lambda t: t is SiluAndMul,
    "attn": lambda t: t is PagedAttention,
    **{n: (lambda t: t is RMSNorm) for n in ("input_layernorm", "post_attention_layernorm", "norm", "q_norm",
                                             "k_norm")},
}
