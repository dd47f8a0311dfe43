"""QuantConfig: what the load-time module swap should do."""
from __future__ import annotations

from dataclasses import dataclass

import torch

FORMATS = ("8bit", "4bit", "fp8")
# Bump when the on-disk quantized layout or the quantization math changes: old caches then miss.
# 2: device kernel layout stored (mapped at load), tied 8-bit embedding; 3: int4 per-group grid search
QUANT_CACHE_VERSION = 3
INT4_GROUP_SIZES = (256, 128, 64, 32)  # what torch's int4 tinygemm kernels accept
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class QuantConfig:
    """Weight-only (4bit, 8bit) or W8A8 (fp8) quantization applied by `quantize_model_`.

    format: None (do nothing) | "8bit" | "4bit" | "fp8".
    group_size: int4 group along in_features (32, 64, 128 or 256); a layer whose in_features is not
        a multiple falls back to the largest smaller supported group that divides it, or is skipped.
    skip: fnmatch patterns on module names (full dotted name or its last component) left unquantized.
        A Linear whose weight is shared with another parameter (a tied lm_head) is always skipped.
    hqq: refine int4 zero points with an HQQ-style half-quadratic search (slower to quantize,
        lower weight error); hqq_iters iterations.
    dense_min_m: at M (tokens in the call) >= this, 4bit/8bit layers dequantize the weight and run a
        dense matmul instead of the packed kernel (the packed kernels slow down at large M).
        "auto" = the measured default for the device (see support.default_dense_min_m);
        None = always use the packed kernel (on CUDA int4 this also drops a second weight copy).
    cpu_compute_dtype: activation dtype fed to the CPU int4/int8 kernels ("bfloat16" is the fast
        path on CPUs with AVX512-BF16/AMX; "float32" is exact but the kernel is slow).
    tied_embedding: a tied embedding / LM head stored once in per-row int8 ("8bit"), left dense
        ("dense"), or "auto" (8 bits on the CPU, dense on CUDA) - quant/embedding.py.
    lm_head: the same choice for an untied LM head (which `skip` keeps out of the 4/8-bit layers).
    """

    format: str | None = None
    group_size: int = 128
    skip: tuple[str, ...] = ("lm_head",)
    hqq: bool = False
    hqq_iters: int = 20
    dense_min_m: int | str | None = "auto"
    cpu_compute_dtype: str = "bfloat16"
    tied_embedding: str = "auto"
    lm_head: str = "auto"

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(
                f"unknown quantization format {self.format!r}: use None, " + ", ".join(map(repr, FORMATS))
            )
        if self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"group_size must be one of {INT4_GROUP_SIZES}, got {self.group_size}")
        if isinstance(self.skip, str):
            self.skip = (self.skip,)
        self.skip = tuple(self.skip)
        if not (self.dense_min_m is None or self.dense_min_m == "auto"
                or (isinstance(self.dense_min_m, int) and self.dense_min_m >= 1)):
            raise ValueError(f"dense_min_m must be 'auto', None or an int >= 1, got {self.dense_min_m!r}")
        if self.cpu_compute_dtype not in _DTYPES:
            raise ValueError(f"cpu_compute_dtype must be one of {sorted(_DTYPES)}, got {self.cpu_compute_dtype!r}")
        for name in ("tied_embedding", "lm_head"):
            if getattr(self, name) not in ("auto", "8bit", "dense"):
                raise ValueError(f"{name} must be 'auto', '8bit' or 'dense', got {getattr(self, name)!r}")
        if self.hqq_iters < 1:
            raise ValueError(f"hqq_iters must be >= 1, got {self.hqq_iters}")

    @property
    def cpu_dtype(self) -> torch.dtype:
        return _DTYPES[self.cpu_compute_dtype]

    def cache_fields(self) -> dict:
        """Everything that changes the quantized tensors (the on-disk cache key includes these)."""
        return {
            "format": self.format,
            "group_size": self.group_size,
            "hqq": self.hqq,
            "hqq_iters": self.hqq_iters if self.hqq else 0,
            "version": QUANT_CACHE_VERSION,
        }
