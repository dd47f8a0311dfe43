"""Which formats a device can run, and the default M at which packed kernels hand over to dense."""
from __future__ import annotations

import torch

from .config import FORMATS
from .fp8 import fp8_problem


def _op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


def supported_formats(device: torch.device | str) -> dict[str, str | None]:
    """format -> None if usable on `device`, else the reason it is not (a sentence for the user)."""
    device = torch.device(device)
    out: dict[str, str | None] = {}
    if device.type == "cpu":
        out["4bit"] = None if _op("_weight_int4pack_mm_for_cpu") and _op("_convert_weight_to_int4pack_for_cpu") \
            else f"this torch ({torch.__version__}) has no _weight_int4pack_mm_for_cpu; upgrade torch or use '8bit'"
        out["8bit"] = None if _op("_weight_int8pack_mm") \
            else f"this torch ({torch.__version__}) has no _weight_int8pack_mm"
    elif device.type == "cuda":
        if not torch.cuda.is_available():
            reason = "CUDA is not available in this torch/machine"
            return {f: reason for f in FORMATS}
        idx = device.index if device.index is not None else torch.cuda.current_device()
        cc = torch.cuda.get_device_capability(idx)
        # tinygemm is compiled for sm80+ only
        out["4bit"] = None if cc >= (8, 0) else \
            f"int4 tinygemm needs compute capability >= 8.0, this GPU has {cc[0]}.{cc[1]}; use '8bit'"
        out["8bit"] = None  # dequantize + F.linear runs anywhere
    else:
        return {f: f"quantized weights are implemented for cpu and cuda devices, not {device.type}" for f in FORMATS}
    out["fp8"] = fp8_problem(device)
    return out


# Measured with benchmarks/quant_kernels.py --threads 1 (1024x1024 weight, fp32 model activations,
# bf16 kernel activations, 2-core Sapphire Rapids VM, torch 2.13, 2026-11-26), ms per matmul:
#   int4: packed kernel 1.63 vs dequantize + bf16 matmul 2.12 at M=64; 2.44 vs 2.15 at M=96.
#   int8: packed kernel 0.40 vs 0.74 at M=16; 0.86 vs 0.80 at M=32.
# (With 2 threads on the shared machine every op had a ~6 ms floor: OpenMP contention, not kernels.)
# CUDA int4: estimated from REFERENCE.md's H100 probe (tinygemm 0.023 ms vs bf16 0.024 ms at M=16,
#   0.081 vs 0.018 at M=64) plus an unfused dequantize of roughly 0.05 ms: dense wins from M ~ 64.
#   Not yet measured on a GPU with this code. CUDA int8 always dequantizes (value unused).
_DEFAULT_DENSE_MIN_M = {("cpu", "4bit"): 96, ("cpu", "8bit"): 32, ("cuda", "4bit"): 64, ("cuda", "8bit"): 1}


def default_dense_min_m(device: torch.device | str, fmt: str) -> int | None:
    return _DEFAULT_DENSE_MIN_M.get((torch.device(device).type, fmt))
