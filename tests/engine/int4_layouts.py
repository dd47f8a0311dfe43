"""Test-side packers for the AWQ / GPTQ 4-bit checkpoint layouts, written from the layouts'
descriptions (independently of app/engine/quant/convert.py), and a round-to-nearest quantizer
that turns a dense weight into known levels / zero points / scales.

Shapes: K = in_features, N = out_features, G = K / group_size."""
from __future__ import annotations

import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # column held by nibble i of an AWQ GEMM word


def pack_cols(v: torch.Tensor, order=None) -> torch.Tensor:
    """(R, C) levels -> (R, C/8) int32, nibble i holds column 8c + order[i]."""
    order = order or list(range(8))
    r, c = v.shape
    out = torch.zeros(r, c // 8, dtype=torch.int64)
    for i in range(8):
        out |= v[:, order[i]::8].to(torch.int64) << (4 * i)
    return (out - ((out >> 31) << 32)).to(torch.int32)  # reinterpret as signed 32-bit


def pack_rows(v: torch.Tensor) -> torch.Tensor:
    """(K, N) levels -> (K/8, N) int32, nibble j of row r holds k = 8r + j."""
    out = torch.zeros(v.shape[0] // 8, v.shape[1], dtype=torch.int64)
    for j in range(8):
        out |= v[j::8].to(torch.int64) << (4 * j)
    return (out - ((out >> 31) << 32)).to(torch.int32)


def rtn_levels(weight: torch.Tensor, group_size: int, *, sym: bool, min_zero: int = 0):
    """Round-to-nearest 4-bit of a dense (N, K) weight.

    Returns q (K, N) levels 0..15, z (G, N) integer zero points, s (G, N) fp16 scales, and the exact
    dequantized weight (N, K) float32 = (q - z) * s. sym: z = 8. min_zero: smallest zero point
    allowed (GPTQ v1 stores z - 1, so it cannot hold 0)."""
    n, k = weight.shape
    g = k if group_size == -1 else group_size
    wg = weight.detach().float().t().reshape(k // g, g, n)  # (G, g, N)
    if sym:
        s = (wg.abs().amax(dim=1) / 7.0).clamp(min=1e-4).half()  # (G, N)
        z = torch.full_like(s, 8, dtype=torch.int64)
    else:
        lo, hi = wg.amin(dim=1).clamp(max=0), wg.amax(dim=1).clamp(min=0)
        s = ((hi - lo) / 15.0).clamp(min=1e-4).half()
        z = torch.round(-lo / s.float()).to(torch.int64).clamp(min_zero, 15)
    q = torch.clamp(torch.round(wg / s.float().unsqueeze(1)) + z.unsqueeze(1), 0, 15).to(torch.int64)
    q = q.reshape(k, n)
    w = (q - z.repeat_interleave(g, 0)).float() * s.float().repeat_interleave(g, 0)  # (K, N)
    return q, z, s, w.t().contiguous()


def awq_tensors(q, z, s) -> dict[str, torch.Tensor]:
    return {"qweight": pack_cols(q, AWQ_ORDER), "qzeros": pack_cols(z, AWQ_ORDER), "scales": s}


def gptq_tensors(q, z, s, group_size: int, checkpoint_format: str = "gptq") -> dict[str, torch.Tensor]:
    k = q.shape[0]
    g = k if group_size == -1 else group_size
    stored = z - 1 if checkpoint_format == "gptq" else z  # v1 stores zero - 1
    if (stored < 0).any():
        raise ValueError("GPTQ v1 cannot store a zero point of 0: quantize with min_zero=1")
    return {"qweight": pack_rows(q), "qzeros": pack_cols(stored), "scales": s,
            "g_idx": (torch.arange(k) // g).to(torch.int32)}
