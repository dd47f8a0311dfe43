"""Detect a pre-quantized (AWQ / GPTQ 4-bit) checkpoint from config.json and validate it.

`prequantized_spec(hf_config, quantization=..., lora_path=..., native=...)` returns None for an
ordinary checkpoint, a `PrequantSpec` for a layout we convert at load (see convert.py), and raises
a ValueError saying what is unsupported and what to do for anything else: other bit widths,
act-order GPTQ, AWQ GEMV/Marlin/exllama kernels' layouts, GPTQ Marlin/BitBLAS formats,
bitsandbytes, fp8 / compressed-tensors, exl2, ...
"""
from __future__ import annotations

from dataclasses import dataclass

_USE_DENSE = ("load the unquantized (bf16/fp16) checkpoint instead, with quantization='4bit' for int4 weights "
              "quantized at load")
AWQ_VERSIONS = ("gemm",)
GPTQ_FORMATS = ("gptq", "gptq_v2")


@dataclass(frozen=True)
class PrequantSpec:
    method: str  # "awq" | "gptq"
    group_size: int  # as in config.json; -1 = one group per row (per-channel)
    checkpoint_format: str  # awq: "gemm"; gptq: "gptq" (zeros stored minus one) | "gptq_v2"
    sym: bool  # gptq: symmetric (zero 8); awq: not zero_point

    def describe(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"group {self.group_size}"
        return f"{self.method.upper()} 4-bit ({self.checkpoint_format}, {g}, {'sym' if self.sym else 'asym'})"


def _unsupported(what: str) -> ValueError:
    return ValueError(f"pre-quantized checkpoint not supported: {what}. Supported: AWQ 4-bit GEMM (zero_point) "
                      f"and GPTQ 4-bit (desc_act=False, checkpoint_format gptq/gptq_v2); or {_USE_DENSE}.")


def _group_size(qc: dict) -> int:
    g = qc.get("group_size", 128)
    if not isinstance(g, int) or not (g == -1 or g > 0):
        raise _unsupported(f"group_size {g!r}")
    if g != -1 and g % 32:
        raise _unsupported(f"group_size {g} (the int4 kernels need a multiple of 32)")
    return g


def detect_prequantized(hf_config) -> PrequantSpec | None:
    """The checkpoint's quantization as a PrequantSpec, None if unquantized; ValueError if unsupported."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    if not isinstance(qc, dict):
        qc = qc.to_dict() if hasattr(qc, "to_dict") else dict(vars(qc))
    method = str(qc.get("quant_method", "")).lower()
    if method not in ("awq", "gptq"):
        raise _unsupported(f"quant_method {method or '(missing)'!r}")
    bits = qc.get("bits", qc.get("w_bit"))
    if bits != 4:
        raise _unsupported(f"{method.upper()} with bits={bits!r} (only 4-bit)")
    group = _group_size(qc)
    if method == "awq":
        version = str(qc.get("version", "gemm")).lower()
        if version not in AWQ_VERSIONS:
            raise _unsupported(f"AWQ version {version!r} (only the GEMM layout; GEMV/Marlin/exllama/IPEX "
                               "layouts differ)")
        if not qc.get("zero_point", True):
            raise _unsupported("AWQ with zero_point=False")
        if group == -1:
            raise _unsupported("AWQ with group_size -1")
        return PrequantSpec("awq", group, "gemm", sym=False)
    if qc.get("desc_act", False):
        raise _unsupported("GPTQ with desc_act=True (act-order: permuted groups); re-quantize with desc_act=False")
    if qc.get("dynamic"):
        raise _unsupported("GPTQ with per-module 'dynamic' overrides")
    fmt = str(qc.get("checkpoint_format") or qc.get("format") or "gptq").lower()
    if fmt not in GPTQ_FORMATS:
        raise _unsupported(f"GPTQ checkpoint_format {fmt!r} (only 'gptq' and 'gptq_v2' layouts)")
    return PrequantSpec("gptq", group, fmt, sym=bool(qc.get("sym", True)))


def prequantized_spec(hf_config, *, quantization: str | None = None, lora_path=None,
                      native: bool = True) -> PrequantSpec | None:
    """detect_prequantized plus the engine options a pre-quantized checkpoint rules out."""
    spec = detect_prequantized(hf_config)
    if spec is None:
        return None
    if not native:
        archs = list(getattr(hf_config, "architectures", None) or [])
        raise ValueError(f"pre-quantized {spec.method.upper()} checkpoints load only for natively implemented "
                         f"architectures (Qwen2, Llama, Mistral, Qwen3), not {archs}; {_USE_DENSE}")
    if quantization not in (None, "4bit"):
        raise ValueError(f"quantization={quantization!r} cannot be applied to a checkpoint that is already "
                         f"{spec.describe()}: pass quantization=None (or '4bit'), or load the unquantized "
                         f"checkpoint with quantization={quantization!r}")
    if lora_path:
        raise ValueError(f"LoRA adapters cannot be merged into the packed weights of a {spec.describe()} "
                         "checkpoint: load the unquantized checkpoint with lora_path (and quantization='4bit' "
                         "to quantize after merging)")
    return spec
