"""A model's tokenizer without the model, so `docgen estimate` cuts chunks exactly as `run` does.

`run` sizes chunks with the generator's `count_tokens`/`count_prompt_tokens` (the tokenizer and
chat template of the loaded model); this offers the same two methods from the tokenizer files
alone, found in a local model folder or the Hugging Face cache (never downloaded).
"""
from __future__ import annotations

from pathlib import Path

from app.llm import prompts
from app.llm.types import CodeChunk


class TokenCounter:
    def __init__(self, tokenizer, max_seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def count_tokens(self, text: str) -> int:
        return prompts.count_tokens(self.tokenizer, text)

    def count_prompt_tokens(self, chunk) -> int:
        return prompts.count_prompt_tokens(self.tokenizer, chunk)


def _tokenizer_on_disk(model: str) -> bool:
    """Checked before importing transformers (which imports torch): no files, no import."""
    local = Path(model).expanduser()
    if local.is_dir():
        return (local / "tokenizer_config.json").is_file() or (local / "tokenizer.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "tokenizer_config.json"), str)
    except Exception:  # noqa: BLE001 - not a hub id, or no hub library
        return False


def load_counter(model: str, max_seq_length: int) -> tuple[TokenCounter | None, str]:
    """(counter, "") or (None, why there is none). Loading a tokenizer imports transformers (and with
    it torch, a few seconds); it is done only when the tokenizer files are on this machine."""
    local = Path(model).expanduser()
    if not _tokenizer_on_disk(model):
        return None, f"the tokenizer of {model} is not on this machine"
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        return None, f"transformers is not importable ({exc})"
    try:
        if local.is_dir():
            tok = AutoTokenizer.from_pretrained(str(local))
        else:
            tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - not cached here, or not a tokenizer: fall back to estimates
        return None, f"the tokenizer of {model} is not on this machine ({type(exc).__name__})"
    counter = TokenCounter(tok, max_seq_length)
    try:
        counter.count_prompt_tokens(CodeChunk(code="pass", path="x.py", name="x"))
    except Exception as exc:  # noqa: BLE001 - e.g. no chat template: the run would fail the same way
        return None, f"the tokenizer of {model} cannot render the prompt ({exc})"
    return counter, ""
