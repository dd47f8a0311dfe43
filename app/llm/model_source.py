"""Where a model's files are: a local directory, or a hub id resolved through the local cache."""
from __future__ import annotations

import pathlib

# Files a safetensors checkpoint needs (no pickled *.bin weights).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~", "\\")) or model_id.count("/") != 1 or "\\" in model_id


def resolve_model_dir(model_id: str, *, local_files_only: bool = False) -> pathlib.Path:
    """A local directory holding the model: `model_id` itself, or the hub cache's snapshot of it.

    A hub id (`owner/name`) is looked up in the Hugging Face cache first, then downloaded unless
    `local_files_only`. Raises ValueError saying what to do when neither works.
    """
    if not isinstance(model_id, (str, pathlib.Path)) or not str(model_id).strip():
        raise ValueError(f"model_id must be a local directory or a hub id such as 'Qwen/Qwen2.5-Coder-7B-Instruct', got {model_id!r}")
    model_id = str(model_id)
    path = pathlib.Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json: pass the directory of a Hugging Face format checkpoint")
        return path
    if path.exists():
        raise ValueError(f"{model_id} is a file; pass the checkpoint's directory")
    if _looks_like_path(model_id):
        raise ValueError(f"model directory {model_id!r} does not exist; pass an existing local directory or a hub id (owner/name)")

    from huggingface_hub import snapshot_download

    try:
        return pathlib.Path(snapshot_download(model_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception as cached_error:
        if local_files_only:
            raise ValueError(
                f"model {model_id!r} is not in the Hugging Face cache and local_files_only is set: "
                "download it first or pass a local directory path"
            ) from cached_error
    try:
        return pathlib.Path(snapshot_download(model_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise ValueError(
            f"could not load model {model_id!r}: it is not a local directory, not in the Hugging Face "
            f"cache, and the hub could not provide it ({type(exc).__name__}: {str(exc)[:200]}). "
            "If this machine is offline, pass a local path to the model's directory instead."
        ) from exc
