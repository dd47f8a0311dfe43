"""Reads safetensors headers (never the data) to catch truncated or corrupt weight files early.

A safetensors file is: 8 bytes (little-endian u64) header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the data.
A file cut short by an interrupted download or copy still has a valid header that points past
its end; the safetensors library then fails deep inside loading with a bare error, after the
model has been allocated.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20  # the library's own limit; real headers are a few hundred kB at most

# Bytes per element; None: a packed or unknown type whose size is not checked here.
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}


@dataclass
class WeightsSummary:
    """What the checkpoint's headers say: element count and stored bytes of every tensor."""

    numel: int = 0
    nbytes: int = 0
    tensors: int = 0


def _corrupt(path: Path, why: str) -> ValueError:
    from .model_check import ModelLoadError

    return ModelLoadError(f"weight file {path} is corrupt or incomplete ({why}); download or copy the model again")


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of one safetensors file, and how many data bytes follow it."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _corrupt(path, f"{size} bytes, too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise _corrupt(path, f"header length {n} does not fit a file of {size} bytes")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"the header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    return header, size - 8 - n


def check_safetensors(path: Path) -> WeightsSummary:
    """Every tensor's offsets lie inside the file and match its dtype and shape."""
    header, data_bytes = read_header(path)
    out = WeightsSummary()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            numel = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                numel *= d
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"tensor {name!r} has a malformed header entry") from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise _corrupt(path, f"tensor {name!r} has invalid data offsets {begin}..{end}")
        if end > data_bytes:
            raise _corrupt(path, f"tensor {name!r} ends at data byte {end} but the file holds only {data_bytes} "
                                 "data bytes: it is truncated")
        width = DTYPE_BYTES.get(dtype)
        if width is not None and numel * width != end - begin:
            raise _corrupt(path, f"tensor {name!r} ({dtype}, shape {shape}) needs {numel * width} bytes "
                                 f"but its offsets span {end - begin}")
        out.numel += numel
        out.nbytes += end - begin
        out.tensors += 1
    return out


def summarize_weights(files: list[Path]) -> WeightsSummary | None:
    """Checks every safetensors file; None when a file is not safetensors (pickled .bin: not read)."""
    total = WeightsSummary()
    for f in files:
        if f.suffix != ".safetensors":
            return None
        s = check_safetensors(f)
        total.numel, total.nbytes, total.tensors = total.numel + s.numel, total.nbytes + s.nbytes, total.tensors + s.tensors
    return total
