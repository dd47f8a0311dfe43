"""The dense path of the quantized layers at large M (prefill), a block of weight rows at a time.

At M >= dense_min_m the packed CPU kernels are slower than a bf16 matmul on a dequantized weight
(support.py). Dequantizing the whole (N, K) weight per call allocates a fresh N x K temporary
(55 MB for Qwen2.5-1.5B's gate_up in bf16) and makes several passes over it in memory; here each
block of rows (about BLOCK_ELEMS weights, a few MB that stay in cache) is dequantized and
multiplied right away into its slice of the output. Same values as dequantize + F.linear (the
same per-row arithmetic; the tests compare them).

Measured (a micro-benchmark of one Int4Linear, 1 thread, the 2-core VM loaded by other jobs,
torch 2.13, the 1536 -> 17920 gate|up weight of Qwen2.5-Coder-1.5B): M=271 104 ms blocked vs
154 ms whole-weight dequantize + matmul (packed int4 kernel: 133 ms); M=64 52 vs 131 ms.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

BLOCK_ELEMS = 2 << 20  # weights dequantized at a time (4 MB in bf16)


def block_rows(k: int, align: int = 64) -> int:
    """Rows per block for in_features k: about BLOCK_ELEMS weights, a multiple of `align`."""
    return max(align, BLOCK_ELEMS // k // align * align)


def blocked_linear(x: torch.Tensor, n: int, step: int, rows: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """x (M, K) -> (M, N) = x @ W.T, where rows(r0, r1) returns W[r0:r1] (r1 - r0, K) in x's dtype."""
    y = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    for r0 in range(0, n, step):
        r1 = min(r0 + step, n)
        y[:, r0:r1] = F.linear(x, rows(r0, r1))
    return y
