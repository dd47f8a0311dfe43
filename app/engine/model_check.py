"""Checks a checkpoint before anything is allocated: config fields, weight files, memory.

A config.json with `hidden_size` 10^9, `num_attention_heads` 0 or `num_hidden_layers` 10^5, a
truncated safetensors file, or a KV budget larger than the machine used to end in a raw
traceback (ZeroDivisionError, SafetensorError, an allocator error), sometimes after minutes of
allocating. Each of these is a `ModelLoadError` (a ValueError) here, with what is wrong and what
to do, raised before the model, the rotary table or the KV pool exist.

`check_config_file` runs on the raw JSON (transformers' config classes divide by
`num_attention_heads` on construction); checkpoint_check.check_model runs on the loaded config,
once the device and dtype are known (it lives there because it needs the loader and the memory
estimate, which themselves raise ModelLoadError from here: one direction, no import cycle).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ConfigLimits:
    """Upper bounds far above any released model (largest known in brackets), so a value beyond
    them is a broken or hostile config.json, not a big model."""

    hidden_size: int = 1 << 17  # [~25k]
    num_hidden_layers: int = 1024  # [~160]
    num_attention_heads: int = 1024  # [128]
    num_key_value_heads: int = 1024
    head_dim: int = 4096  # [256]
    intermediate_size: int = 1 << 20  # [~60k]
    vocab_size: int = 1 << 22  # [~262k]
    max_position_embeddings: int = 1 << 24  # [10M]


LIMITS = ConfigLimits()
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Raw config.json spellings of the same fields (transformers maps them with attribute_map).
ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_key_value_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
}


def validate_fields(get: Callable[[str], Any], where: str, required: bool, limits: ConfigLimits = LIMITS) -> None:
    """Positive integers within `limits`; heads divide the hidden size (unless head_dim is given)
    and KV heads divide the heads. `get(field)` returns a value or None when absent."""
    values: dict[str, int] = {}
    for name in ALIASES:
        v = get(name)
        if v is None:
            if required and name in REQUIRED:
                raise ModelLoadError(f"{where}: `{name}` is missing; the model's config.json must set it")
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelLoadError(f"{where}: `{name}` is {v!r}; it must be a positive integer")
        cap = getattr(limits, name)
        if v > cap:
            raise ModelLoadError(f"{where}: `{name}` is {v}, beyond any real model (limit {cap}); "
                                 "the config.json is broken or does not belong to this model")
        values[name] = v
    heads, kv = values.get("num_attention_heads"), values.get("num_key_value_heads")
    hidden = values.get("hidden_size")
    if heads and kv and heads % kv:
        raise ModelLoadError(f"{where}: num_key_value_heads ({kv}) must divide num_attention_heads ({heads})")
    if heads and hidden and "head_dim" not in values and hidden % heads:
        raise ModelLoadError(f"{where}: num_attention_heads ({heads}) must divide hidden_size ({hidden}) "
                             "when the config gives no head_dim")


def check_config_file(path: Path) -> None:
    """config.json parses as a JSON object and its sizes are sane (before transformers reads it)."""
    f = Path(path) / "config.json"
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{f} is not a readable JSON file ({type(e).__name__}: {e}); "
                             "download or copy the model again") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{f} holds a JSON {type(raw).__name__}, not an object of model settings")
    for section, d in (("", raw), (" (text_config)", raw.get("text_config"))):
        if isinstance(d, dict):
            validate_fields(lambda k, d=d: next((d[a] for a in ALIASES[k] if d.get(a) is not None), None),
                            f"{f}{section}", required=False)


def text_config(hf_config):
    get = getattr(hf_config, "get_text_config", None)
    return get() if callable(get) else hf_config


def validate_config(hf_config, where: str = "config.json") -> None:
    """The loaded config (attribute names resolved by transformers), required fields included."""
    c = text_config(hf_config)
    validate_fields(lambda k: getattr(c, k, None), where, required=True)
