"""A tied embedding / LM head stored once, in 8 bits.

Models with `tie_word_embeddings` use one (vocab, hidden) matrix both to look tokens up and to
score them. Left dense it is often the largest tensor of a small quantized model (Qwen2.5-Coder-
1.5B: 933 MB in fp32 next to ~1 GB of int4/int8 layers). Per-row symmetric int8 suits both uses:
a row is a token's embedding and also that token's output channel, so one scale per row serves
the lookup and the matmul. `Int8Linear` (the LM head) owns the tensors; `Int8Embedding` holds the
same tensors (weight_bytes counts them once).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .int8 import Int8Linear


class Int8Embedding(nn.Module):
    """nn.Embedding over the int8 rows of an Int8Linear: row = q[id] * scale[id], in `dtype`."""

    def __init__(self, head: Int8Linear, dtype: torch.dtype):
        super().__init__()
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.dtype = dtype
        self.register_buffer("qweight", head.qweight)  # (V, H) int8, the same storage as the head's
        self.register_buffer("scale", head.scale)  # (V,)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # (..., H): gather the int8 rows first, so only the looked-up rows are converted
        return self.qweight[ids].to(self.dtype) * self.scale[ids].to(self.dtype).unsqueeze(-1)

    def reference_forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.qweight.float() * self.scale.float()[:, None]
        return nn.functional.embedding(ids, w).to(self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows shared with the LM head"


def tied_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(embedding name, linear name) for each nn.Embedding whose weight a nn.Linear shares.
    Sharing is the same Parameter object (works on the meta device, where data pointers are 0)."""
    embeds = {id(m.weight): n for n, m in model.named_modules() if type(m) is nn.Embedding}
    return [(embeds[id(m.weight)], n) for n, m in model.named_modules()
            if type(m) is nn.Linear and id(m.weight) in embeds]


def untied_heads(model: nn.Module, cfg) -> list[str]:
    """Names of an untied, bias-free LM head (a nn.Linear named `lm_head`, weight not shared) to be
    stored per-row int8 (QuantConfig.lm_head; "auto": on the CPU). The head is left out of the
    4-bit/8-bit layers by QuantConfig.skip; in 8 bits it keeps its accuracy (same math as a tied
    head, BENCHMARKS.md issue 14) and its matmul reads a quarter of the fp32 bytes per token
    (cpu-31m: 1.6 -> 0.35 ms, Qwen2.5-Coder-7B's 152064x3584: 390 -> 147 ms, 1 thread)."""
    if cfg.format not in ("4bit", "8bit"):
        return []
    tied = {id(m.weight) for m in model.modules() if type(m) is nn.Embedding}
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and n.rsplit(".", 1)[-1] == "lm_head"
            and id(m.weight) not in tied and m.bias is None]


def tied_8bit_wanted(setting: str, device: torch.device) -> bool:
    """QuantConfig.tied_embedding / lm_head: "8bit" | "dense" | "auto" (8-bit on CPU, where memory is the
    constraint and the int8 kernel is fast; dense on CUDA, where Int8Linear dequantizes per call)."""
    return setting == "8bit" or (setting == "auto" and torch.device(device).type == "cpu")


def build_tied_int8(qweight: torch.Tensor, scale: torch.Tensor, head_bias, dtype: torch.dtype, *,
                    dense_min_m, cpu_compute_dtype) -> tuple[Int8Embedding, Int8Linear]:
    head = Int8Linear(qweight, scale, head_bias, dense_min_m=dense_min_m, cpu_compute_dtype=cpu_compute_dtype)
    return Int8Embedding(head, dtype), head
