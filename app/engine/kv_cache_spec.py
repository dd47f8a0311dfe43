"""KVCacheSpec: what the paged KV cache stores and how, owned by the model runner.

One place decides the cache's element type (`kv_cache_dtype`: "auto" = the model dtype, "fp8" =
float8_e4m3fn) and, for fp8, the per-layer scales (stored value = x / scale, see
attention/torch_ref.py). The runner applies the spec to its attention layers when it allocates
the pool; the layers only read it.

fp8 scales are fixed before the first request, so an output never depends on which request came
first (scales taken from the first batch would): either from a scales file
(`kv_cache_scales="path.json"`, as written by `KVScales.save`), or by running CALIBRATION_PROMPT
through the model at load with a temporary full-precision cache and taking each layer's largest
|K| and |V|, with FP8_SCALE_MARGIN headroom (e4m3 saturates beyond it, it never overflows).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .attention.torch_ref import FP8_DTYPES

FP8_E4M3_MAX = 448.0
# Headroom over the calibration prompt's largest |K| / |V|: values up to 2x larger still fit;
# e4m3's range below that costs little precision.
FP8_SCALE_MARGIN = 2.0
CALIBRATION_MAX_TOKENS = 512

# Fixed text run at load to calibrate fp8 KV scales: code and prose, like the engine's real work.
CALIBRATION_PROMPT = '''You are documenting a Python repository. Summarise what this module does,
its public functions, their arguments and return values, and any error it raises.

```python
"""Token bucket rate limiter used by the HTTP client."""
import time
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float  # tokens added per second
    capacity: int

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)
        self.updated = time.monotonic()

    def take(self, n: int = 1) -> bool:
        """Remove n tokens if available; returns False (and removes nothing) otherwise."""
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.capacity}")
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True
```

## Overview
The module defines `TokenBucket`, a rate limiter: 1. `take(n)` refills the bucket for the time
elapsed, then removes `n` tokens when there are enough. 2. It raises `ValueError` for n > capacity.
'''


@dataclass(frozen=True)
class KVScales:
    """Per-layer fp8 scales, one (k, v) pair per attention layer, in model order."""
    k: tuple[float, ...]
    v: tuple[float, ...]
    source: str = ""  # "calibration prompt" or the file they came from (for the load report)

    def __post_init__(self) -> None:
        if len(self.k) != len(self.v):
            raise ValueError(f"fp8 KV scales: {len(self.k)} key scales but {len(self.v)} value scales")
        bad = [x for x in self.k + self.v if not (math.isfinite(x) and x > 0)]
        if bad:
            raise ValueError(f"fp8 KV scales must be finite and > 0, got {bad[:4]} ({self.source or 'scales'})")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"k_scale": list(self.k), "v_scale": list(self.v)}, indent=1))

    @classmethod
    def load(cls, path: str | Path, num_layers: int) -> KVScales:
        try:
            d = json.loads(Path(path).read_text())
            k, v = [float(x) for x in d["k_scale"]], [float(x) for x in d["v_scale"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read fp8 KV scales from {path}: {type(e).__name__}: {e}; expected JSON "
                             '{"k_scale": [one float per layer], "v_scale": [...]} as KVScales.save writes') from e
        if len(k) != num_layers or len(v) != num_layers:
            raise ValueError(f"fp8 KV scales file {path} has {len(k)} key / {len(v)} value scales but the model "
                             f"has {num_layers} attention layers; calibrate them for this model")
        return cls(tuple(k), tuple(v), source=str(path))


@dataclass(frozen=True)
class KVCacheSpec:
    dtype: torch.dtype  # element type of the K and V pools
    scales: KVScales | None = None  # fp8 only, required there
    calibration: str | None = field(default=None)  # fp8: scales file, or None for the calibration prompt

    @property
    def is_fp8(self) -> bool:
        return self.dtype in FP8_DTYPES

    def layer_scales(self, i: int) -> tuple[float | None, float | None]:
        if not self.is_fp8:
            return None, None
        if self.scales is None:
            raise RuntimeError("an fp8 KV cache needs calibrated scales before it is allocated "
                               "(ModelRunner.calibrate_kv or kv_cache_scales=...)")
        return self.scales.k[i], self.scales.v[i]

    def as_report(self) -> dict:
        r = {"kv_cache_dtype": str(self.dtype).replace("torch.", "")}
        if self.scales is not None:
            r["kv_cache_scales"] = {"source": self.scales.source, "k": list(self.scales.k), "v": list(self.scales.v)}
        return r


def resolve_kv_dtype(kv_cache_dtype: str, model_dtype: torch.dtype, native: bool = True) -> torch.dtype:
    """The cache's element type: "fp8" is float8_e4m3fn on the native runner (the transformers
    fallback keeps its cache in the model dtype), "auto" the model dtype."""
    if kv_cache_dtype == "fp8" and native:
        return torch.float8_e4m3fn
    return model_dtype


def kv_cache_spec(cfg, model_dtype: torch.dtype) -> KVCacheSpec:
    """The spec an EngineConfig asks for, before calibration (scales are filled in by the runner)."""
    return KVCacheSpec(resolve_kv_dtype(cfg.kv_cache_dtype, model_dtype), calibration=cfg.kv_cache_scales)


def compute_kv_scale(tensor: torch.Tensor, margin: float = 1.0) -> float:
    """Per-tensor scale so that tensor / scale fits e4m3's finite range (|x / scale| <= 448 / margin).

    margin > 1 leaves headroom for later tokens larger than the ones seen. An all-zero (or empty)
    tensor gives 1.0. Raises ValueError on NaN/inf input (a scale from those would be garbage).
    """
    if margin < 1.0:
        raise ValueError(f"margin must be >= 1.0, got {margin}")
    if tensor.numel() == 0:
        return 1.0
    amax = tensor.detach().abs().amax().float().item()
    if amax != amax or amax == float("inf"):
        raise ValueError("compute_kv_scale got NaN or inf values; compute scales from finite activations")
    if amax == 0.0:
        return 1.0
    return amax * margin / FP8_E4M3_MAX


def as_kv_spec(spec: KVCacheSpec | torch.dtype) -> KVCacheSpec:
    """A plain dtype is a cache that needs no scales (the draft's, the fallback's)."""
    return spec if isinstance(spec, KVCacheSpec) else KVCacheSpec(spec)


def calibrated(spec: KVCacheSpec, runner, tokenizer, max_model_len: int) -> KVCacheSpec:
    """The spec with its fp8 scales filled in (from its scales file, else the calibration prompt);
    other dtypes unchanged. Runs before the pool is allocated: the run's cache is temporary."""
    if not spec.is_fp8 or spec.scales is not None:
        return spec
    n_layers = len(runner.attn_layers)
    if spec.calibration:
        return replace(spec, scales=KVScales.load(spec.calibration, n_layers))
    ids = tokenizer.encode(CALIBRATION_PROMPT)[: min(CALIBRATION_MAX_TOKENS, max_model_len)]
    return replace(spec, scales=calibrate_scales(runner, ids))


def calibrate_scales(runner, token_ids: list[int], margin: float = FP8_SCALE_MARGIN) -> KVScales:
    """Per-layer scales from one prefill of token_ids through the runner's model, with a temporary
    cache in the model dtype (exact attention, so each layer sees what full precision gives): the
    largest |K| and |V| each layer computes, times `margin`. The runner is left without a pool."""
    from .scheduler import ScheduledSeq, SchedulerOutput
    from .sampling_params import SamplingParams
    from .sequence import Sequence

    if not token_ids:
        raise ValueError("fp8 KV calibration needs a non-empty prompt")
    seen: dict[int, tuple[float, float]] = {}

    def observe(i, _module, args):  # args: (q, k, v, meta), k/v (T, Hkv, D)
        seen[i] = (compute_kv_scale(args[1], margin), compute_kv_scale(args[2], margin))

    hooks = [a.register_forward_pre_hook(lambda m, args, i=i: observe(i, m, args))
             for i, a in enumerate(runner.attn_layers)]
    num_blocks = -(-len(token_ids) // runner.block_size)
    try:
        runner.allocate_kv_cache(num_blocks, runner.dtype)
        seq = Sequence(list(token_ids), SamplingParams(max_tokens=1))
        seq.block_table = list(range(num_blocks))
        runner.execute(SchedulerOutput(scheduled=[ScheduledSeq(seq, len(token_ids))]))
    finally:
        for h in hooks:
            h.remove()
        runner.release_kv_cache()
    n = len(runner.attn_layers)
    assert len(seen) == n, f"calibration saw {len(seen)} of {n} attention layers"
    return KVScales(tuple(seen[i][0] for i in range(n)), tuple(seen[i][1] for i in range(n)),
                    source=f"calibration prompt ({len(token_ids)} tokens)")
