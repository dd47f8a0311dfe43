"""On-disk cache of quantized weights (one safetensors file per checkpoint + settings).

The file name is a hash of (cache_key = the caller's checkpoint fingerprint, format, group size,
HQQ settings, skip patterns, QUANT_CACHE_VERSION), so any change of those misses and re-quantizes;
the same fields are stored in the header and compared again on read. Tensors are stored as each
module's own buffers in its device's kernel layout (state.py), `{module name}.{tensor}`, every one
64-byte aligned (mapped_safetensors.write_aligned); per-module info (kind, group size, shape) is
JSON in the header. A read maps the file and returns views into it (no copy: the model's
quantized weights are then the file's pages). Writes go to a temporary file renamed into place,
so a mapped file is never modified under a running engine.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..mapped_safetensors import MappedSafetensors, write_aligned


def cache_identity(cache_key: str, fields: dict, skip: tuple[str, ...]) -> str:
    """fields: QuantConfig.cache_fields() plus the device layout tag and the tied-embedding choice."""
    return json.dumps({"cache_key": cache_key, "skip": list(skip), **fields}, sort_keys=True)


def cache_path(cache_dir: str | os.PathLike, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"quant-{digest}.safetensors"


def read_cache(path: Path, identity: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict] | None:
    """-> ({module name: {tensor name: mapped view}}, {module name: info}) or None if absent/stale."""
    if not path.is_file():
        return None
    try:
        f = MappedSafetensors(path)
        if f.metadata.get("identity") != identity:
            return None
        infos = json.loads(f.metadata["modules"])
        payloads: dict[str, dict[str, torch.Tensor]] = {name: {} for name in infos}
        for key in f.keys():
            mod, _, tname = key.rpartition(".")
            payloads[mod][tname] = f.tensor(key)
    except Exception:  # a truncated or foreign file is a miss, not a crash
        return None
    return payloads, infos


def write_cache(path: Path, identity: str, payloads: dict[str, dict[str, torch.Tensor]], infos: dict) -> None:
    tensors = {f"{mod}.{tname}": t for mod, p in payloads.items() for tname, t in p.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".quant-", suffix=".tmp")
    os.close(fd)
    try:
        write_aligned(tmp, tensors, metadata={"identity": identity, "modules": json.dumps(infos)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
