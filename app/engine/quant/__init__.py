"""Weight quantization as a load-time module swap (issue 6), plus AWQ/GPTQ conversion.

Public API:
    QuantConfig(format=None|"8bit"|"4bit"|"fp8", group_size=128, skip=("lm_head",), hqq=False, ...)
    quantize_model_(model, cfg, *, cache_dir=None, cache_key=None) -> report dict
    supported_formats(device) -> {format: None | reason}
    weight_bytes(model) -> int
    awq_to_int4(qweight, qzeros, scales) / gptq_to_int4(qweight, qzeros, scales, g_idx, checkpoint_format=)
        -> Int4Weights; Int4Linear(Int4Weights, bias, ...) builds the layer (Int4Weights.cat fuses q/k/v).
    compute_kv_scale(tensor) -> float (the fp8 KV cache's, ../kv_cache_spec.py)

Formats: "4bit" group-wise asymmetric int4 through torch's tinygemm kernels (int4.py, int4_linear.py);
"8bit" per-channel symmetric int8 (int8.py); "fp8" row-wise W8A8 with torch._scaled_mm on CUDA
cc >= 8.9 (fp8.py). AWQ/GPTQ layouts supported: see convert.py's docstring.
"""
from .config import FORMATS, QUANT_CACHE_VERSION, QuantConfig
from .convert import awq_to_int4, gptq_to_int4
from .fp8 import Fp8Linear
from ..kv_cache_spec import compute_kv_scale
from .int4 import Int4Weights, dequantize_int4, quantize_int4
from .int4_linear import Int4Linear
from .int8 import Int8Linear, quantize_int8
from .support import default_dense_min_m, supported_formats
from .swap import QUANTIZED_TYPES, quantize_model_, weight_bytes

__all__ = [
    "FORMATS", "QUANT_CACHE_VERSION", "QuantConfig", "quantize_model_", "supported_formats", "weight_bytes",
    "Int4Weights", "Int4Linear", "Int8Linear", "Fp8Linear", "QUANTIZED_TYPES", "quantize_int4", "dequantize_int4",
    "quantize_int8", "awq_to_int4", "gptq_to_int4", "compute_kv_scale", "default_dense_min_m",
]
