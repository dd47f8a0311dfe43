"""AWQ / GPTQ checkpoint tensors -> our int4 format: build the layouts from known levels, convert back.

The packers (tests/engine/int4_layouts.py) are written from the layouts' descriptions, independently of convert.py."""
import pytest
import torch

from app.engine.quant import Int4Linear, Int4Weights, awq_to_int4, gptq_to_int4

from .int4_layouts import AWQ_ORDER
from .int4_layouts import pack_cols as _pack_cols
from .int4_layouts import pack_rows as _pack_rows


def _known(k=256, n=64, g=128, sym=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (k, n), generator=gen)
    z = torch.full((k // g, n), 8) if sym else torch.randint(0, 16, (k // g, n), generator=gen)
    s = (torch.rand(k // g, n, generator=gen) * 0.02 + 0.001).half()
    w_kn = (q - z.repeat_interleave(g, 0)).float() * s.float().repeat_interleave(g, 0)
    return q, z, s, w_kn.t()  # the layer's weight (N, K)


def test_awq_round_trip():
    q, z, s, w = _known()
    out = awq_to_int4(_pack_cols(q, AWQ_ORDER), _pack_cols(z, AWQ_ORDER), s)
    assert out.group_size == 128 and out.qweight.shape == (64, 128)
    assert torch.equal(out.unpacked().long(), q.t())
    torch.testing.assert_close(out.dequantize(), w, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
def test_gptq_round_trip(sym, fmt):
    q, z, s, w = _known(g=64, sym=sym, seed=1)
    stored_z = (z - 1) if fmt == "gptq" else z  # v1 stores zero - 1
    g_idx = torch.arange(256, dtype=torch.int32) // 64
    out = gptq_to_int4(_pack_rows(q), _pack_cols(stored_z.clamp(min=0)), s, g_idx, checkpoint_format=fmt)
    if fmt == "gptq" and not sym:  # a zero point of 0 cannot be stored as -1 in 4 bits: compare where it could
        ok = (z > 0).repeat_interleave(64, 0).t()
        torch.testing.assert_close(out.dequantize()[ok], w[ok], atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(out.dequantize(), w, atol=1e-6, rtol=0)
    assert torch.equal(out.unpacked().long(), q.t())


def test_gptq_act_order_rejected():
    q, z, s, _ = _known(g=64)
    g_idx = (torch.arange(256) // 64).flip(0).to(torch.int32)
    with pytest.raises(ValueError, match="desc_act"):
        gptq_to_int4(_pack_rows(q), _pack_cols(z), s, g_idx)


def test_per_channel_group_expands_exactly_and_runs():
    q, z, s, w = _known(k=512, n=32, g=512, seed=2)  # one group per row: above the kernel's 256
    out = awq_to_int4(_pack_cols(q, AWQ_ORDER), _pack_cols(z, AWQ_ORDER), s)
    assert out.group_size == 256
    torch.testing.assert_close(out.dequantize(), w, atol=1e-6, rtol=0)
    mod = Int4Linear(out, None, dense_min_m=None, cpu_compute_dtype=torch.float32)
    x = torch.randn(3, 512)
    torch.testing.assert_close(mod(x), x @ w.t(), atol=1e-4, rtol=1e-4)


def test_fusing_qkv_parts():
    parts = []
    ws = []
    for seed, n in [(3, 64), (4, 32), (5, 32)]:
        q, z, s, w = _known(n=n, seed=seed)
        parts.append(awq_to_int4(_pack_cols(q, AWQ_ORDER), _pack_cols(z, AWQ_ORDER), s))
        ws.append(w)
    fused = Int4Weights.cat(parts)
    torch.testing.assert_close(fused.dequantize(), torch.cat(ws), atol=1e-6, rtol=0)


def test_bad_layouts_raise():
    q, z, s, _ = _known()
    with pytest.raises(ValueError, match="int32"):
        awq_to_int4(_pack_cols(q, AWQ_ORDER).float(), _pack_cols(z, AWQ_ORDER), s)
    with pytest.raises(ValueError, match="GEMM layout"):
        awq_to_int4(_pack_rows(q), _pack_cols(z, AWQ_ORDER), s)  # a GPTQ-shaped qweight
