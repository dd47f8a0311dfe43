"""Convert AWQ and GPTQ 4-bit checkpoint tensors (per layer) into our `Int4Weights`.

Supported layouts (K = in_features, N = out_features, G = K / group_size):

AWQ, "GEMM" version (AutoAWQ / llm-awq safetensors, `quant_method: awq`, `version: gemm`, bits 4):
    qweight int32 (K, N/8)  - 8 levels per int32 along N; nibble i (bits 4i..4i+3) holds column
                              8c + [0, 2, 4, 6, 1, 3, 5, 7][i] (AWQ's interleaved order)
    qzeros  int32 (G, N/8)  - integer zero points, same packing and order
    scales  fp16  (G, N)
    w[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]
GPTQ (AutoGPTQ / GPTQModel, `quant_method: gptq`, bits 4, desc_act False, sym or asym):
    qweight int32 (K/8, N)  - 8 levels per int32 along K, nibble j holds row 8r + j
    qzeros  int32 (G, N/8)  - zero points packed along N, nibble j holds column 8c + j
    scales  fp16  (G, N)
    g_idx   int32 (K,)      - must equal k // group_size (act-order checkpoints are rejected)
    checkpoint_format "gptq" (v1) stores z - 1 (w = (q - (stored + 1)) * s); "gptq_v2" stores z.
Not supported (ValueError): AWQ GEMV/Marlin/exllama variants, GPTQ desc_act=True with a permuted
g_idx, bits other than 4, group sizes not a multiple of 32.

Ours: w = (q - 8) * scale + zero, so q is unchanged, scale = s and zero = (8 - z) * s (exact in
float32; the CUDA kernel then rounds scale/zero to bf16). Group sizes above 256 (including
per-channel, g = K) are expanded exactly by repeating the scale and zero of each group.
"""
from __future__ import annotations

import torch

from .int4 import Int4Weights, pack_nibbles

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # column held by nibble i
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # nibble holding column c


def unpack_int32_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(R, C) int32 -> (R, C * 8) int32 levels, nibble i of word c -> column 8c + i.

    int32 arithmetic is enough: `>>` sign-extends negative words, and `& 0xF` keeps only the nibble."""
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    v = (packed.unsqueeze(-1) >> shifts) & 0xF  # (R, C, 8)
    return v.reshape(packed.shape[0], -1)


def _to_int4_weights(q_kn: torch.Tensor, z_gn: torch.Tensor, s_gn: torch.Tensor) -> Int4Weights:
    """q (K, N) levels, z (G, N) integer zeros, s (G, N) scales -> Int4Weights (N-major)."""
    k, n = q_kn.shape
    g_count = s_gn.shape[0]
    if z_gn.shape != (g_count, n) or k % g_count:
        raise ValueError(f"inconsistent int4 tensors: levels {tuple(q_kn.shape)}, zeros {tuple(z_gn.shape)}, "
                         f"scales {tuple(s_gn.shape)}")
    g = k // g_count
    s = s_gn.float()
    zero = (8.0 - z_gn.float()) * s  # (G, N)
    target = next((t for t in (256, 128, 64, 32) if g % t == 0), None)
    if target is None:
        raise ValueError(f"group size {g} is not a multiple of 32: the int4 kernels cannot run it")
    if target != g:  # split each group into g / target identical groups
        s = s.repeat_interleave(g // target, dim=0)
        zero = zero.repeat_interleave(g // target, dim=0)
    return Int4Weights(pack_nibbles(q_kn.t().contiguous()), s.t().contiguous(), zero.t().contiguous(), target)


def awq_to_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> Int4Weights:
    """AWQ GEMM tensors of one linear layer -> Int4Weights (see the module docstring for layouts)."""
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError("AWQ qweight/qzeros must be int32 (AWQ GEMM layout, 4 bits)")
    k, n8 = qweight.shape
    if scales.shape[1] != n8 * 8:
        raise ValueError(f"AWQ scales {tuple(scales.shape)} do not match qweight {tuple(qweight.shape)} "
                         "(expected the GEMM layout qweight (K, N/8), scales (G, N))")
    order = torch.tensor(AWQ_REVERSE_ORDER, device=qweight.device)

    def unpack(t):  # undo AWQ's interleave within each 8 columns
        v = unpack_int32_nibbles(t)
        return v.reshape(t.shape[0], -1, 8)[..., order].reshape(t.shape[0], -1)

    return _to_int4_weights(unpack(qweight), unpack(qzeros), scales)


def gptq_to_int4(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None = None,
    *,
    checkpoint_format: str = "gptq",
) -> Int4Weights:
    """GPTQ 4-bit tensors of one linear layer -> Int4Weights (see the module docstring for layouts)."""
    if checkpoint_format not in ("gptq", "gptq_v2"):
        raise ValueError(f"checkpoint_format must be 'gptq' or 'gptq_v2', got {checkpoint_format!r}")
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise ValueError("GPTQ qweight/qzeros must be int32 (4-bit packing)")
    k8, n = qweight.shape
    k = k8 * 8
    if scales.shape[1] != n or qzeros.shape[1] * 8 != n:
        raise ValueError(f"GPTQ shapes do not fit: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, "
                         f"scales {tuple(scales.shape)} (bits must be 4)")
    g = k // scales.shape[0]
    if g_idx is not None:
        expect = torch.arange(k, device=g_idx.device) // g
        if g_idx.shape != (k,) or not torch.equal(g_idx.to(torch.int64), expect):
            raise ValueError("GPTQ g_idx is not k // group_size: act-order (desc_act=True) checkpoints are not "
                             "supported; re-quantize with desc_act=False or load the bf16 checkpoint with '4bit'")
    # (K/8, N) -> (K/8, N, 8) -> (K/8, 8, N) -> (K, N)
    shifts = torch.arange(0, 32, 4, device=qweight.device, dtype=torch.int32)
    q = ((qweight.unsqueeze(-1) >> shifts) & 0xF).permute(0, 2, 1).reshape(k, n)
    z = unpack_int32_nibbles(qzeros)  # (G, N)
    if checkpoint_format == "gptq":
        z = z + 1
    return _to_int4_weights(q, z, scales)
