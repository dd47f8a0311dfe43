"""One paged decoder-only transformer covering the Llama family: Llama 2/3, CodeLlama, Mistral,
Qwen2/Qwen2.5(-Coder) and Qwen3. The families differ only in a few switches read from the HF
config (`DecoderSpec`): QKV bias (Qwen2), QK-norm (Qwen3), explicit head_dim, tied head.

Projections are plain nn.Linear with fused q|k|v and gate|up weights (one matmul each); the
loader maps HF checkpoint names onto the fused slices. Quantization swaps these Linears after
loading, so this file knows nothing about it. Inputs are flat: all tokens of a step, any mix of
prefill chunks and decodes, as (num_tokens,) ids and positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention.backend import PagedAttention
from ..attention.metadata import AttentionMetadata
from ..layers.activation import SiluAndMul
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding


@dataclass
class DecoderSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    tie_word_embeddings: bool
    max_position_embeddings: int

    @classmethod
    def from_hf(cls, cfg, family: str) -> "DecoderSpec":
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        attn_bias = bool(getattr(cfg, "attention_bias", False))
        act = getattr(cfg, "hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"activation {act!r} is not supported by the native {family} model")
        return cls(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate_size=cfg.intermediate_size,
            rms_norm_eps=cfg.rms_norm_eps,
            qkv_bias=family == "qwen2" or attn_bias,
            o_bias=attn_bias and family != "qwen2",
            mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
            qk_norm=family == "qwen3",
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            max_position_embeddings=cfg.max_position_embeddings,
        )


class Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, rotary: list):
        super().__init__()
        s = spec
        self.q_size, self.kv_size = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = s.num_heads, s.num_kv_heads, s.head_dim
        self.qkv_proj = nn.Linear(s.hidden_size, self.q_size + 2 * self.kv_size, bias=s.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, s.hidden_size, bias=s.o_bias)
        if s.qk_norm:
            self.q_norm = RMSNorm(s.head_dim, s.rms_norm_eps)
            self.k_norm = RMSNorm(s.head_dim, s.rms_norm_eps)
        self.qk_norm = s.qk_norm
        # One table shared by all layers, held in a list so it is not a submodule of each.
        self.rotary = rotary  # [RotaryEmbedding]
        self.attn = PagedAttention(s.num_heads, s.num_kv_heads, s.head_dim, s.head_dim**-0.5)

    def forward(self, positions, x, meta: AttentionMetadata) -> torch.Tensor:
        T = x.shape[0]
        qkv = self.qkv_proj(x)
        qk, v = qkv.split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        v = v.reshape(T, self.num_kv_heads, self.head_dim)  # (T, Hkv, D)
        if self.qk_norm:
            q, k = qk.split([self.q_size, self.kv_size], dim=-1)
            q = self.q_norm(q.reshape(T, self.num_heads, self.head_dim))  # (T, Hq, D)
            k = self.k_norm(k.reshape(T, self.num_kv_heads, self.head_dim))  # (T, Hkv, D)
            q, k = self.rotary[0](positions, q, k)
        else:  # q and k rotated together: one set of elementwise ops instead of two
            qk = qk.reshape(T, self.num_heads + self.num_kv_heads, self.head_dim)
            q, k = self.rotary[0].forward_qk(positions, qk, self.num_heads)
        o = self.attn(q, k, v, meta)  # (T, Hq, D)
        return self.o_proj(o.reshape(T, self.q_size))


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.gate_up_proj = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=spec.mlp_bias)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=spec.mlp_bias)
        self.act = SiluAndMul()

    def forward(self, x):
        return self.down_proj(self.act(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: DecoderSpec, rotary: list):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = Attention(spec, rotary)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = MLP(spec)

    def forward(self, positions, h, meta):
        h = h + self.self_attn(positions, self.input_layernorm(h), meta)
        return h + self.mlp(self.post_attention_layernorm(h))


class DecoderModel(nn.Module):
    def __init__(self, spec: DecoderSpec, hf_config, max_positions: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        rotary = RotaryEmbedding(hf_config, spec.head_dim, max_positions)
        self.rotary = rotary
        self.layers = nn.ModuleList([DecoderLayer(spec, [rotary]) for _ in range(spec.num_layers)])
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, input_ids, positions, meta):
        self.rotary._pos = None  # the cos/sin lookup is shared by this step's layers only
        h = self.embed_tokens(input_ids)  # (T, hidden)
        for layer in self.layers:
            h = layer(positions, h, meta)
        return self.norm(h)


class DecoderForCausalLM(nn.Module):
    # HF checkpoint name fragment -> (our fused parameter fragment, shard index)
    PACKED = {
        "q_proj": ("qkv_proj", 0),
        "k_proj": ("qkv_proj", 1),
        "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, hf_config, family: str, max_positions: int):
        super().__init__()
        self.spec = spec = DecoderSpec.from_hf(hf_config, family)
        self.model = DecoderModel(spec, hf_config, max_positions)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, positions, meta) -> torch.Tensor:
        return self.model(input_ids, positions, meta)  # (T, hidden)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()  # (rows, vocab)

    def shard_sizes(self, fused: str) -> list[int]:
        s = self.spec
        if fused == "qkv_proj":
            return [s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim]
        return [s.intermediate_size, s.intermediate_size]

    def load_weights(self, weights) -> set[str]:
        """weights: iterable of (hf_name, tensor). Returns the names of parameters filled."""
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if "rotary_emb" in name:
                continue
            if self.spec.tie_word_embeddings and name == "lm_head.weight":
                continue
            target, shard = name, None
            for frag, (fused, idx) in self.PACKED.items():
                if f".{frag}." in name:
                    target, shard = name.replace(f".{frag}.", f".{fused}."), idx
                    break
            if target not in params:
                raise ValueError(f"checkpoint tensor {name!r} has no place in the native model")
            p = params[target]
            with torch.no_grad():
                if shard is None:
                    if p.shape != tensor.shape:
                        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(p.shape)}")
                    p.copy_(tensor)
                else:
                    sizes = self.shard_sizes(target.split(".")[-2])
                    start = sum(sizes[:shard])
                    dst = p.narrow(0, start, sizes[shard])
                    if dst.shape != tensor.shape:
                        raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != {tuple(dst.shape)}")
                    dst.copy_(tensor)
            loaded.add(f"{target}#{shard}" if shard is not None else target)
        return loaded

    def expected_weights(self) -> set[str]:
        out = set()
        for name, _ in self.named_parameters():
            fused = name.split(".")[-2] if "." in name else ""
            if fused in ("qkv_proj", "gate_up_proj"):
                out.update(f"{name}#{i}" for i in range(len(self.shard_sizes(fused))))
            else:
                out.add(name)
        return out
