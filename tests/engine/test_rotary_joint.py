"""RotaryEmbedding.forward_qk (q and k heads rotated together, one set of elementwise ops) ==
forward (q and k rotated separately, the reference), bit for bit."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from app.engine.layers.rotary import RotaryEmbedding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 5])
def test_forward_qk_equals_forward(dtype, T):
    cfg = SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    rot = RotaryEmbedding(cfg, head_dim=16, max_positions=64)
    hq, hkv, d = 4, 2, 16
    g = torch.Generator().manual_seed(T)
    qkv = torch.randn(T, (hq + 2 * hkv) * d, generator=g).to(dtype)  # a fused projection's output
    qk = qkv[:, : (hq + hkv) * d].reshape(T, hq + hkv, d)  # a strided view, as in the decoder
    positions = torch.arange(30, 30 + T)
    q_ref, k_ref = rot(positions, qk[:, :hq].contiguous(), qk[:, hq:].contiguous())
    rot._pos = None  # a new step: the table is looked up again
    q, k = rot.forward_qk(positions, qk, hq)
    assert q.shape == (T, hq, d) and k.shape == (T, hkv, d) and q.dtype == dtype
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)
    assert not torch.equal(q, qk[:, :hq])  # it did rotate
