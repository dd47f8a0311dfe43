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
        # Every layer of a step passes the same positions tensor: look the table up once.
        if positions is not getattr(self, "_pos", None) or self._cs[0].dtype != q.dtype:
            self._pos = positions
            self._cs = (self.cos[positions].to(q.dtype).unsqueeze(1), self.sin[positions].to(q.dtype).unsqueeze(1))
        cos, sin = self._cs  # (T, 1, D)
        if self._apply_rotary is not None:  # torch.compile'd version (app/engine/compile.py)
            return self._apply_rotary(q, k, cos, sin)
        return apply_rotary(q, k, cos, sin)


def apply_rotary(q, k, cos, sin):
    """q (T, Hq, D), k (T, Hkv, D), cos/sin (T, 1, D) -> rotated q, k (HF's rotate-half convention)."""
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)
