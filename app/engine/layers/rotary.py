"""Rotary position embedding with a precomputed cos/sin table.

The inverse frequencies come from transformers' own rope functions for every rope type its
configs describe (default, linear, llama3, yarn, ...), so scaled ropes match the oracle exactly.
Rope types whose frequencies depend on the current length (dynamic, longrope) are refused.
"""
from __future__ import annotations

import torch
from torch import nn

STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional")


def rope_parameters(hf_config) -> dict:
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params and "rope_type" not in params:
        params = params["full_attention"]
    if not params:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_type", params.pop("type", "default"))
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return dict(params)


def inv_freq_and_scaling(hf_config, head_dim: int) -> tuple[torch.Tensor, float]:
    params = rope_parameters(hf_config)
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        base = params["rope_theta"]
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv, 1.0
    if rope_type not in STATIC_ROPE_TYPES:
        raise ValueError(
            f"rope type {rope_type!r} is not supported by the native engine (supported: "
            f"{', '.join(STATIC_ROPE_TYPES)}); use a model without it or the transformers fallback"
        )
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_config, "cpu")
    return inv.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    def __init__(self, hf_config, head_dim: int, max_positions: int):
        super().__init__()
        inv_freq, scaling = inv_freq_and_scaling(hf_config, head_dim)
        pos = torch.arange(max_positions, dtype=torch.float)  # on the default (build) device
        freqs = torch.outer(pos, inv_freq.to(pos.device))
        emb = torch.cat((freqs, freqs), dim=-1)  # (max_positions, head_dim)
        self.register_buffer("cos", emb.cos() * scaling, persistent=False)
        self.register_buffer("sin", emb.sin() * scaling, persistent=False)
        self._apply_rotary = None

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """positions (T,); q (T, Hq, D); k (T, Hkv, D) -> rotated q, k."""
        cos, sin = self._table(positions, q.dtype)  # (T, 1, D)
        if self._apply_rotary is not None:  # torch.compile'd version (app/engine/compile.py)
            return self._apply_rotary(q, k, cos, sin)
        return apply_rotary(q, k, cos, sin)

    def forward_qk(self, positions: torch.Tensor, qk: torch.Tensor, num_q_heads: int):
        """qk (T, Hq+Hkv, D): q's and k's heads side by side (a view of the fused qkv output) ->
        rotated q (T, Hq, D), k (T, Hkv, D), views of one new tensor. The same elementwise ops as
        `forward`, so the same values, in half the op dispatches (they dominate at batch 1)."""
        q, k = qk[:, :num_q_heads], qk[:, num_q_heads:]
        if self._apply_rotary is not None:
            return self.forward(positions, q, k)
        cos, sin = self._table(positions, qk.dtype)  # (T, 1, D)
        r = qk * cos + _rotate_half(qk) * sin
        return r[:, :num_q_heads], r[:, num_q_heads:]

    def _table(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # Every layer of a step passes the same positions tensor: look the table up once.
        if positions is not getattr(self, "_pos", None) or self._cs[0].dtype != dtype:
            self._pos = positions
            self._cs = (self.cos[positions].to(dtype).unsqueeze(1), self.sin[positions].to(dtype).unsqueeze(1))
        return self._cs


def apply_rotary(q, k, cos, sin):
    """q (T, Hq, D), k (T, Hkv, D), cos/sin (T, 1, D) -> rotated q, k (HF's rotate-half convention)."""
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)
