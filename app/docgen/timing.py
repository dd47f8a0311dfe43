"""Time estimates as a range, from what was measured on this machine.

Every `docgen run` that generated something records its speed here (seconds per generated chunk
and per generated token, with the model's parameter count and the hardware) in a small per-user
file. An estimate then uses, in this order: a measurement of the same model on this machine
(range x0.75-x1.5: chunks differ in length); a measurement of another model scaled by parameter
count (x0.5-x2); else a rough range from the hardware class, labelled as not measured.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from app.docgen.hardware import Hardware

# Unmeasured fallbacks, per 1e9 parameters: seconds per generated token (batched decoding) and per
# prompt token (prefill). Wide on purpose; a first run replaces them with a measurement.
ROUGH_DECODE_S_PER_TOKEN_PER_B = {"cpu": (0.01, 0.1), "gpu": (1.5e-5, 2e-4)}
ROUGH_PREFILL_S_PER_TOKEN_PER_B = {"cpu": (0.002, 0.03), "gpu": (2e-6, 3e-5)}
# Per generated token whatever the size: scheduling, sampling and Python work per step dominate small
# models. docstring-13m once made 7 tokens/s on a loaded 2-core machine; with the fused CPU decode
# step it made 2870 tokens/s on an idle one (toolz, batched: 3.5e-4 s per token, 2026-11-30), so the
# CPU range now spans both ends.
ROUGH_DECODE_FLOOR_S_PER_TOKEN = {"cpu": (2e-4, 0.15), "gpu": (1e-4, 2e-3)}
TYPICAL_SHARE_OF_MAX_NEW_TOKENS = (0.3, 1.0)  # generated tokens per chunk, as a share of --max-new-tokens


def rates_path() -> Path:
    base = os.environ.get("DOCGEN_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "docgen")
    return Path(base) / "speed.json"


def machine_key(hw: Hardware) -> str:
    return f"{hw.device}:{hw.gpu_name or hw.cpu_cores}"


def load_rates() -> list[dict]:
    try:
        data = json.loads(rates_path().read_text(encoding="utf-8"))
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def record_rate(hw: Hardware, model: str, params: int | None, chunks: int, seconds: float, tokens: int) -> None:
    """Keep the latest measurement per (machine, model). Best effort: a read-only home loses nothing else."""
    if chunks <= 0 or seconds <= 0:
        return
    key = machine_key(hw)
    rows = [r for r in load_rates() if not (r.get("machine") == key and r.get("model") == model)]
    rows.append({"machine": key, "model": model, "params": params, "s_per_chunk": seconds / chunks,
                 "s_per_token": seconds / max(1, tokens), "chunks": chunks, "when": time.time()})
    path = rates_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows[-50:], indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


@dataclass
class TimeRange:
    low: float
    high: float
    basis: str


def estimate_time(chunks: int, prompt_tokens: int, max_new_tokens: int, model: str, params: int | None,
                  hw: Hardware, project_s_per_chunk: float | None = None) -> TimeRange | None:
    """Seconds to generate `chunks` chunks (model loading not included); None when nothing can be said."""
    if chunks == 0:
        return TimeRange(0.0, 0.0, "nothing to generate")
    if project_s_per_chunk is not None:
        s = project_s_per_chunk * chunks
        return TimeRange(0.75 * s, 1.5 * s, f"measured {project_s_per_chunk:.2f}s per chunk in an earlier run of "
                                            f"{model} on this project")
    key = machine_key(hw)
    here = [r for r in load_rates() if r.get("machine") == key]
    same = next((r for r in reversed(here) if r.get("model") == model), None)
    if same is not None:
        s = same["s_per_chunk"] * chunks
        return TimeRange(0.75 * s, 1.5 * s, f"measured {same['s_per_chunk']:.2f}s per chunk for {model} on this "
                                            f"machine ({same['chunks']} chunks)")
    other = next((r for r in reversed(here) if r.get("params") and params), None)
    if other is not None:
        scale = params / other["params"]
        s = other["s_per_chunk"] * scale * chunks
        return TimeRange(0.5 * s, 2.0 * s, f"scaled from {other['model']} measured on this machine "
                                           f"({other['s_per_chunk']:.2f}s per chunk) by parameter count (x{scale:.2g})")
    if params is None:
        return None
    b = params / 1e9
    dec, pre = ROUGH_DECODE_S_PER_TOKEN_PER_B[hw.device], ROUGH_PREFILL_S_PER_TOKEN_PER_B[hw.device]
    floor = ROUGH_DECODE_FLOOR_S_PER_TOKEN[hw.device]
    share = TYPICAL_SHARE_OF_MAX_NEW_TOKENS
    low = chunks * max_new_tokens * share[0] * max(floor[0], b * dec[0]) + b * prompt_tokens * pre[0]
    high = chunks * max_new_tokens * share[1] * max(floor[1], b * dec[1]) + b * prompt_tokens * pre[1]
    return TimeRange(low, high, f"not measured on this machine: a rough range for {b:.2g}B parameters on "
                                f"{hw.describe()}; the first run measures it")


def format_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
