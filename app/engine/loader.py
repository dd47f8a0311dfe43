"""Checkpoint resolution and weight streaming: HF directory or hub id -> config, weights.

Safetensors only by default: pickled `.bin` checkpoints can execute code when loaded, so they
need `allow_pickle=True`. `trust_remote_code` is never implied.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Iterator

import torch


def load_hf_config(path: Path, trust_remote_code: bool = False):
    """The checkpoint's config, its sizes checked first (model_check: a broken config.json is a
    clear ModelLoadError, not a ZeroDivisionError inside transformers)."""
    from transformers import AutoConfig

    from .model_check import ModelLoadError, check_config_file

    check_config_file(path)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelLoadError(f"{Path(path) / 'config.json'} is not a config transformers can read "
                             f"({type(e).__name__}: {e})") from e


def weight_files(path: Path, allow_pickle: bool = False) -> list[Path]:
    st = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        st = [path / n for n in names]
        missing = [n for n in st if not n.exists()]
        if missing:
            raise ValueError(f"checkpoint shards listed in {index.name} are missing: {[m.name for m in missing]}")
    if st:
        return st
    bins = sorted(path.glob("*.bin"))
    if bins and not allow_pickle:
        raise ValueError(
            f"{path} has only pickled .bin weights, which can run arbitrary code when loaded. "
            "Convert them to safetensors, or pass allow_pickle=True if you trust the source."
        )
    if bins:
        return bins
    raise ValueError(f"{path} contains no weights (*.safetensors)")


def iter_weights(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of every file, read lazily one at a time.

    Safetensors tensors are zero-copy views into a memory map; a tensor's pages are dropped from
    RSS when the next one is asked for (the consumer has copied it by then; a view it kept stays
    valid and faults back in from the file if touched again)."""
    for name, tensor, release in iter_mapped_weights(files):
        yield name, tensor
        release()


def iter_mapped_weights(files: list[Path]) -> Iterator[tuple[str, torch.Tensor, Callable[[], None]]]:
    """(name, tensor view, release) per tensor: call release() once done with the tensor to drop
    its file pages from RSS (streaming quantization keeps RSS near the quantized model's size);
    release(lo, hi) drops only the pages within bytes [lo, hi) of the tensor."""
    from .mapped_safetensors import MappedSafetensors

    for f in files:
        if f.suffix == ".bin":
            state = torch.load(f, map_location="cpu", weights_only=True)
            for name in list(state):
                yield name, state.pop(name), _noop
            continue
        mf = MappedSafetensors(f)
        for name in mf.keys():
            yield name, mf.tensor(name), functools.partial(mf.release, name)


def _noop(lo: int | None = None, hi: int | None = None) -> None:
    pass


# Bytes of tensor data sampled per file for the fingerprint: SAMPLE_COUNT windows of SAMPLE_BYTES
# spread evenly over the file (1 MiB read, whatever the checkpoint's size).
SAMPLE_COUNT, SAMPLE_BYTES = 16, 64 * 1024


def checkpoint_fingerprint(files: list[Path]) -> str:
    """Identity of a checkpoint's contents for on-disk caches (the quantized-weights cache).

    Names, sizes and mtimes are not enough: two fine-tunes of one base have equal sizes, and
    Docker layers, `cp -p` or SOURCE_DATE_EPOCH give them equal mtimes, so the second would load
    the first's cached weights. The digest covers each file's resolved path, size, nanosecond
    mtime, its whole safetensors header (names, dtypes, shapes, offsets, metadata) and 16 evenly
    spaced 64 KiB windows of its bytes, so different weights differ in the digest even when
    they sit at the same path with the same size and mtime (short of identical sampled bytes).
    """
    import hashlib

    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}\0".encode())
        with open(f, "rb") as fh:
            if f.suffix == ".safetensors" and st.st_size >= 8:
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, st.st_size - 8)))
            for i in range(SAMPLE_COUNT):
                fh.seek(st.st_size * i // SAMPLE_COUNT)
                h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()[:16]
