"""What the engine did at load, as typed records read by the engine, the generators
(app.llm.optimizations), the server and the benchmarks: LoadReport, with the quantizer's
QuantReport and torch.compile's CompileReport inside it.

The keys that cross layers are fields (`report.kv_blocks`, `report.quantization.cache`,
`report.compile.active`); keys only one backend or format writes (the fallback's `architecture`,
a pre-quantized checkpoint's `method`, ...) live in `extra`. Each record is also a mutable
mapping whose keys are its set fields and its extra keys, so `as_dict()` gives the JSON the
reports and benchmarks have always written, and dict-style callers keep working.
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator

BACKENDS = ("native", "transformers-fallback")


class _Record(MutableMapping):
    """Fields plus `extra`, seen as one mapping. A field listed in `_ABSENT_WHEN_NONE` is not a key
    while it is None (unset); the others are always keys, None included, as in the dicts the
    records replace."""

    _ABSENT_WHEN_NONE: ClassVar[frozenset[str] | None] = None  # None: every field
    _REQUIRED: ClassVar[frozenset[str]] = frozenset()  # fields that cannot be deleted
    extra: dict[str, Any]

    def _fields(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"]

    def _is_key(self, name: str) -> bool:
        absent = self._ABSENT_WHEN_NONE
        return getattr(self, name) is not None or (absent is not None and name not in absent)

    def __getitem__(self, key: str) -> Any:
        if key in self._fields():
            if not self._is_key(key):
                raise KeyError(key)
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._fields():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._fields():
            if not self._is_key(key) or key in self._REQUIRED:
                raise KeyError(key)
            setattr(self, key, None)
        else:
            del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in self._fields() if self._is_key(k))
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, nested records included (JSON-ready as far as the values are)."""
        return {k: v.as_dict() if isinstance(v, _Record) else v for k, v in self.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """The record of a report written as a dict: known keys to fields, the rest to extra."""
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names})


@dataclass(eq=False)
class QuantReport(_Record):
    """The weight quantizer's report (app.engine.quant: quantize_model_, the streamed loader and
    prequantized_report all write these keys). A pre-quantized checkpoint's own keys (method,
    checkpoint_format, checkpoint_group_size, sym, description) are in extra."""
    _ABSENT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"streamed", "prequantized", "cpu_kernel"})

    format: str | None = None  # "8bit" | "4bit" | "fp8"
    quantized: list[str] = field(default_factory=list)  # module names swapped for quantized ones
    skipped: dict[str, str] = field(default_factory=dict)  # module name -> why it stayed dense
    group_sizes: dict[str, int] = field(default_factory=dict)  # 4bit: module name -> group size
    tied_embedding: dict | None = None  # {"embedding", "head", "format"}: one shared 8-bit copy
    lm_head: dict | None = None  # {"name", "format"}: an untied LM head stored 8-bit (CPU, quant_lm_head)
    cache: str | None = None  # quantized-weights cache: None (off) | "hit" | "miss"
    # CPU small-M kernels (quant/vnni.use_vnni_): {"kernel": "vnni"|"torch", "layers", "max_m", "reason"}
    cpu_kernel: dict | None = None
    cache_path: str | None = None
    bytes_before: int | None = None  # weight_bytes of the whole model
    bytes_after: int | None = None
    seconds: float | None = None
    streamed: bool | None = None  # quantized while reading the checkpoint (quant/stream.py)
    prequantized: bool | None = None  # the checkpoint was quantized already (GPTQ/AWQ/...)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class CompileReport(_Record):
    """torch.compile of the elementwise modules (app.engine.compile)."""
    active: bool = False
    seconds: float = 0.0  # compile + warm-up time
    modules: int = 0  # modules running compiled code
    error: str | None = None  # why it fell back to eager
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class LoadReport(_Record):
    """A field that is None was not set and is not a key: `"quantization" in report` is False for
    an unquantized load."""
    _REQUIRED: ClassVar[frozenset[str]] = frozenset({"backend"})

    model_path: str | None = None
    device: str | None = None
    dtype: str | None = None  # the model's dtype, without "torch."
    backend: str = "native"  # one of BACKENDS
    attention_backend: str | None = None
    kv_blocks: int | None = None
    kv_tokens: int | None = None
    max_model_len: int | None = None
    kv_cache_dtype: str | None = None  # e.g. "bfloat16", "float8_e4m3fn"
    kv_cache_scales: dict | None = None  # fp8 KV: {"source", "k", "v"}
    draft_kv_blocks: int | None = None
    quantization: QuantReport | None = None
    # CPU bf16 / float32 model: its dense Linears' kernels (layers/bf16_linear.py, f32_linear.py)
    cpu_kernel: dict | None = None
    compile: CompileReport | None = None
    cuda_graphs: dict | None = None
    async_scheduling: dict | None = None  # {"active": bool, "reason": str}
    load: dict | None = None  # load time and resident memory (load_meter)
    disabled_features: dict[str, str] | None = None  # optional feature -> why it was turned off
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific keys

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # The nested reports are typed whichever way they are written (attribute, key, update()).
        if name == "quantization" and value is not None and not isinstance(value, QuantReport):
            value = QuantReport.from_dict(value)
        elif name == "compile" and value is not None and not isinstance(value, CompileReport):
            value = CompileReport.from_dict(value)
        super().__setattr__(name, value)

    @classmethod
    def start(cls, path, device, dtype, backend: str = "native", **extra: Any) -> "LoadReport":
        """The header every runner's setup writes first (the dtype without its "torch." prefix)."""
        return cls(model_path=str(path), device=str(device), dtype=str(dtype).replace("torch.", ""),
                   backend=backend, extra=dict(extra))

    def disable(self, feature: str, reason: str) -> None:
        """Record an optional feature turned off at load (app.engine.errors.FEATURES)."""
        if self.disabled_features is None:
            self.disabled_features = {}
        self.disabled_features[feature] = reason

    # ----- the typed reads the layers above use ---------------------------------------------
    @property
    def compiled(self) -> bool:
        return self.compile is not None and self.compile.active

    @property
    def kv_fp8(self) -> bool:
        return "float8" in (self.kv_cache_dtype or "")
