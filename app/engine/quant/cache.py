"""On-disk cache of quantized weights (one safetensors file per checkpoint + settings).

The file name is a hash of (cache_key = the caller's checkpoint fingerprint, format, group size,
HQQ settings, skip patterns, QUANT_CACHE_VERSION), so any change of those misses and re-quantizes;
the same fields are stored in the header and compared again on read. Tensors are stored in the
portable (device-independent) layout, `{module name}.{tensor}`; per-module info (format, group
size, shape) is JSON in the header. Writes go to a temporary file renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def cache_identity(cache_key: str, fields: dict, skip: tuple[str, ...]) -> str:
    return json.dumps({"cache_key": cache_key, "skip": list(skip), **fields}, sort_keys=True)


def cache_path(cache_dir: str | os.PathLike, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"quant-{digest}.safetensors"


def read_cache(path: Path, identity: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict] | None:
    """-> ({module name: {tensor name: tensor}}, {module name: info}) or None if absent/stale."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("identity") != identity:
                return None
            infos = json.loads(meta["modules"])
            payloads: dict[str, dict[str, torch.Tensor]] = {name: {} for name in infos}
            for key in f.keys():
                mod, _, tname = key.rpartition(".")
                # clone: own, aligned memory (views into the file can be misaligned for the kernels)
                payloads[mod][tname] = f.get_tensor(key).clone()
    except Exception:  # a truncated or foreign file is a miss, not a crash
        return None
    return payloads, infos


def write_cache(path: Path, identity: str, payloads: dict[str, dict[str, torch.Tensor]], infos: dict) -> None:
    tensors = {
        f"{mod}.{tname}": t.detach().to("cpu").contiguous() for mod, p in payloads.items() for tname, t in p.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".quant-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"identity": identity, "modules": json.dumps(infos)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
