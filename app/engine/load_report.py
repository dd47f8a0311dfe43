"""LoadReport: what the engine did at load, as one typed record read by the engine, the
generators (app.llm.optimizations), the server and the benchmarks.

The keys that cross layers are fields (`report.kv_blocks`, `report.compile`, ...); backend-specific
keys (the fallback's `architecture`, `fallback_notes`, ...) live in `extra`. It is also a mutable
mapping, so existing dict-style callers (`report["kv_blocks"]`, `report.get("compile")`,
`setdefault("disabled_features", {})`, `dict(report)`) keep working. A field that is None was not
set and is not a key: `"quantization" in report` is False for an unquantized load, as before.
The nested reports (quantization, compile, cuda_graphs, ...) stay plain dicts.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

BACKENDS = ("native", "transformers-fallback")


@dataclass(eq=False)
class LoadReport(MutableMapping):
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
    quantization: dict | None = None  # the quantizer's report (quantized layers, bytes, cache)
    compile: dict | None = None  # {"active": bool, "error": ...}
    cuda_graphs: dict | None = None
    async_scheduling: dict | None = None  # {"active": bool, "reason": str}
    load: dict | None = None  # load time and resident memory (load_meter)
    disabled_features: dict[str, str] | None = None  # optional feature -> why it was turned off
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific keys

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @classmethod
    def start(cls, path, device, dtype, backend: str = "native", **extra: Any) -> "LoadReport":
        """The header every runner's setup writes first (the dtype without its "torch." prefix)."""
        return cls(model_path=str(path), device=str(device), dtype=str(dtype).replace("torch.", ""),
                   backend=backend, extra=dict(extra))

    # ----- the typed reads the layers above use ---------------------------------------------
    @property
    def compiled(self) -> bool:
        return bool((self.compile or {}).get("active"))

    @property
    def kv_fp8(self) -> bool:
        return "float8" in (self.kv_cache_dtype or "")

    # ----- mapping view (dict-style callers) ------------------------------------------------
    def _fields(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"]

    def __getitem__(self, key: str) -> Any:
        if key in self._fields():
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._fields():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self._fields():
            if getattr(self, key) is None or key == "backend":
                raise KeyError(key)
            setattr(self, key, None)
        else:
            del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in self._fields() if getattr(self, k) is not None)
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready as far as the nested reports are), for reports and logs."""
        return dict(self)
