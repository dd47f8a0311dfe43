"""Safetensors files read through a memory map, tensor by tensor, without copies.

Why not `safetensors.safe_open`: its `get_tensor` copies every tensor into fresh memory, and the
pages of the file it has touched stay resident while the file is open, so streaming a checkpoint
held the checkpoint's size in RSS (the 12 GB peak of issue 14). Here:
- `MappedSafetensors(path).tensor(name)` is a zero-copy view into a private (copy-on-write) map
  of the file; the view keeps the map alive as long as it lives.
- `release(name)` drops the tensor's pages from this process (madvise MADV_DONTNEED): once the
  caller has copied or quantized a tensor, its file pages stop counting in RSS. The view stays
  valid: touching it again faults the bytes back in from the file (nothing is ever written to
  the map, so nothing is lost).
- `write_aligned` writes a valid safetensors file whose tensors all start on 64-byte boundaries
  (padding entries named `__pad__.N` fill the gaps; readers here skip them), so views into it can
  feed kernels that need aligned memory (torch's CPU int8 matmul crashes on misaligned weights).
"""
from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import torch

ALIGN = 64
PAD_PREFIX = "__pad__."
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
NAMES = {v: k for k, v in DTYPES.items()}
PAGE = mmap.PAGESIZE


class MappedSafetensors:
    """One safetensors file mapped into memory; tensors are views into the map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ValueError(f"{self.path} is not a safetensors file (too short)")
            n = int.from_bytes(fh.read(8), "little")
            if n > size - 8:
                raise ValueError(f"{self.path} is truncated or not a safetensors file (header of {n} bytes)")
            header = json.loads(fh.read(n))
            self.metadata: dict = header.pop("__metadata__", None) or {}
            self.base = 8 + n
            self.entries: dict[str, dict] = header
            end = max((e["data_offsets"][1] for e in header.values()), default=0)
            if self.base + end > size:
                raise ValueError(f"{self.path} is truncated: its header describes {self.base + end} bytes, "
                                 f"the file has {size}")
            # ACCESS_COPY: a private map, so torch.frombuffer gets a writable buffer; nothing writes it
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if size else None

    def keys(self) -> list[str]:
        """Tensor names in file order (padding entries left out)."""
        names = [k for k in self.entries if not k.startswith(PAD_PREFIX)]
        return sorted(names, key=lambda k: self.entries[k]["data_offsets"][0])

    def tensor(self, name: str) -> torch.Tensor:
        e = self.entries[name]
        dtype = DTYPES.get(e["dtype"])
        if dtype is None:
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {e['dtype']}, which this loader does not read")
        start, end = e["data_offsets"]
        shape = e["shape"]
        count = (end - start) // torch.empty(0, dtype=dtype).element_size()
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self.map, dtype=dtype, count=count, offset=self.base + start).view(shape)

    def release(self, name: str, lo: int | None = None, hi: int | None = None) -> None:
        """Drop the whole pages inside `name`'s bytes [lo, hi) (default: all of them) from this
        process's memory (see the module doc)."""
        start, end = (self.base + o for o in self.entries[name]["data_offsets"])
        if lo is not None or hi is not None:
            start, end = start + (lo or 0), min(end, start + hi) if hi is not None else end
        lo = -(-start // PAGE) * PAGE  # pages shared with a neighbour stay
        hi = end // PAGE * PAGE
        if self.map is not None and hi > lo and hasattr(mmap, "MADV_DONTNEED"):
            self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def write_aligned(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file with every tensor's data at a multiple of ALIGN bytes, written tensor by
    tensor from the tensors' own memory (no serialised copy of the whole set in memory)."""
    entries: dict[str, dict] = {}
    order: list[tuple[str, torch.Tensor | int]] = []
    offset = 0
    for name, t in tensors.items():
        if name.startswith(PAD_PREFIX):
            raise ValueError(f"tensor name {name!r} is reserved for padding")
        if t.dtype not in NAMES:
            raise ValueError(f"cannot store dtype {t.dtype} ({name})")
        pad = -offset % ALIGN
        if pad:
            entries[f"{PAD_PREFIX}{len(order)}"] = {"dtype": "U8", "shape": [pad], "data_offsets": [offset, offset + pad]}
            order.append(("", pad))
            offset += pad
        nbytes = t.numel() * t.element_size()
        entries[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        order.append((name, t))
        offset += nbytes
    head = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    head += b" " * (-(8 + len(head)) % ALIGN)  # data starts aligned too
    with open(path, "wb") as fh:
        fh.write(len(head).to_bytes(8, "little"))
        fh.write(head)
        for _, t in order:
            if isinstance(t, int):
                fh.write(b"\0" * t)
            elif t.numel():
                fh.write(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
