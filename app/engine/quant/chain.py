"""Fewer dtype conversions on the CPU decode path: quantized layers that keep their kernel dtype.

The CPU int4/int8 kernels take and return bf16 (QuantConfig.cpu_compute_dtype) while the model
runs in float32. By default every quantized Linear casts its input to bf16 and its output back
(two conversion ops per layer, ~8 per decoder layer, each a dispatch plus a pass over the data).
With `keep_kernel_dtype_` the output stays in the kernel dtype, so a bf16 result flows into the
next quantized layer without a conversion (gate_up -> SiLU*up -> down_proj) and the residual add
`h + y` promotes it back to float32 inside the add. The values the kernels see are the same;
what changes is that the ops between two quantized layers (the SiLU gate; rotary and attention
where q/k/v have no bias) run in bf16. A bias is added in its own dtype (a float32 bias promotes
the output to float32, as before). Accuracy of both paths: BENCHMARKS.md (issue 14).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def finish_output(y: torch.Tensor, bias: torch.Tensor | None, in_dtype: torch.dtype, keep: bool) -> torch.Tensor:
    """A quantized layer's kernel output y -> the layer's output.

    keep=False: cast to the input's dtype, bias cast to it too (the reference behaviour).
    keep=True: no cast; the bias is added in its own dtype (type promotion picks the wider one).
    """
    if keep:
        return y if bias is None else y + bias
    y = y.to(in_dtype)
    return y if bias is None else y + bias.to(in_dtype)


def keep_kernel_dtype_(model: nn.Module, on: bool = True) -> int:
    """Set keep_kernel_dtype on every CPU int4/int8 layer of `model`; returns how many.

    Only for models whose consumers of a Linear's output accept a narrower dtype (the native
    decoder and HF's Llama/Qwen modules: elementwise ops, SDPA, and residual adds that promote).
    The LM head is left alone: logits stay in the model dtype's path (compute_logits casts anyway).
    """
    n = 0
    for name, m in model.named_modules():
        # Int4Linear / Int8Linear (by their attributes: they import this module) on their CPU kernel path
        cpu = hasattr(m, "keep_kernel_dtype") and (getattr(m, "kdevice", None) == "cpu"
                                                   or getattr(m, "use_kernel", False))
        if cpu and not name.endswith("lm_head"):
            m.keep_kernel_dtype = on
            n += 1
    return n
