"""One home for turning user-facing names into what the code runs on: a device, a quantization
format, a model directory. The engine, both generators and the CLI all call these (layers above
import downward, so the home is here, in the engine).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Weight formats the engine knows (None = unquantized). The baseline generator accepts a subset.
QUANT_FORMATS = (None, "8bit", "4bit", "fp8")
# Files a safetensors checkpoint needs from the hub (no pickled *.bin weights).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" = CUDA when there is one, else the CPU; a CUDA device without CUDA is a clear error."""
    import torch  # here, not at the top: EngineConfig imports this module and stays torch-free

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA device is available; use device='cpu' or 'auto'")
    return dev


def normalize_quantization(q: Any, allowed: tuple = QUANT_FORMATS) -> str | None:
    """None/False/"none"/"" -> None; a known format name (any case) -> its lower-case name."""
    if q is None or q is False or (isinstance(q, str) and q.strip().lower() in ("none", "")):
        return None
    if isinstance(q, str) and q.strip().lower() in allowed:
        return q.strip().lower()
    names = ", ".join(repr(f) for f in allowed if f) + ", 'none'"
    raise ValueError(f"quantization={q!r} is not supported; use one of {names}")


def looks_like_path(model: str) -> bool:
    """A string that can only be a filesystem path (a hub id is exactly `owner/name`)."""
    return model.startswith((".", "/", "~", "\\")) or model.count("/") != 1 or "\\" in model


def is_local_model(model: str) -> bool:
    """Whether `model` names a local path rather than a hub id, by resolve_model_path's rule, without
    touching the hub or its cache: it exists here, or it can only be a path."""
    return Path(model).expanduser().exists() or looks_like_path(model)


def model_key(model: str) -> str:
    """The id a generator reports for `model`, which every stored docgen result is keyed by: a hub
    id as given; a local path as written with `~` expanded and pathlib's normalisation ("./m/" ->
    "m"), not made absolute. Changing it orphans the results in existing stores."""
    return str(Path(model).expanduser()) if is_local_model(model) else model


def resolve_model_path(model: str | os.PathLike, *, local_files_only: bool = False) -> Path:
    """A local checkpoint directory: `model` itself, or the hub cache's snapshot of a hub id
    (looked up in the cache first, downloaded unless `local_files_only`). ValueError saying what
    to do when neither works."""
    if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
        raise ValueError(f"model must be a local directory or a hub id such as "
                         f"'Qwen/Qwen2.5-Coder-7B-Instruct', got {model!r}")
    s = str(model)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} has no config.json: pass the directory of a Hugging Face format checkpoint")
        return p
    if p.exists():
        raise ValueError(f"{s} is a file; pass the checkpoint's directory")
    if looks_like_path(s):
        raise ValueError(f"model directory {s!r} does not exist; pass an existing local directory "
                         "or a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover
        raise ValueError("huggingface_hub is needed to resolve hub ids; pass a local path") from e
    try:
        return Path(snapshot_download(s, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception as cached_error:
        if local_files_only:
            raise ValueError(f"model {s!r} is not in the Hugging Face cache and local_files_only is set: "
                             "download it first or pass a local directory path") from cached_error
    try:
        return Path(snapshot_download(s, allow_patterns=HUB_PATTERNS))
    except Exception as e:
        raise ValueError(
            f"could not get model {s!r}: it is not a local directory, not in the Hugging Face cache, and "
            f"the hub could not provide it ({type(e).__name__}: {str(e)[:200]}). Download it on a "
            f"connected machine (`huggingface-cli download {s}`) or pass a local model directory."
        ) from None
