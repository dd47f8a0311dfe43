"""Tokenizer + chat template + EOS ids of a checkpoint, through transformers' AutoTokenizer.

`encode(text)` is for raw completion prompts, where control-token text is meant as control
tokens; chats go through `encode_chat(messages)`, which never lets message text become one."""
from __future__ import annotations

import json
from pathlib import Path

from .chat_encode import encode_chat, render_chat


class Tokenizer:
    def __init__(self, path: Path, trust_remote_code: bool = False):
        from transformers import AutoTokenizer

        try:
            self.hf = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except Exception as e:
            raise ValueError(f"could not load a tokenizer from {path}: {e}") from e
        self.eos_token_ids = self._eos_ids(path)

    def _eos_ids(self, path: Path) -> set[int]:
        ids: set[int] = set()
        if self.hf.eos_token_id is not None:
            ids.add(int(self.hf.eos_token_id))
        gen = path / "generation_config.json"
        if gen.exists():
            eos = json.loads(gen.read_text()).get("eos_token_id")
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, list):
                ids.update(int(e) for e in eos)
        return ids

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt as text, for display. Do not `encode` it to run it: text in the messages
        that looks like a control token (`<|im_end|>`) would become one; use `encode_chat`."""
        return render_chat(self.hf, messages, add_generation_prompt)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids for a chat: special tokens only where the template puts them, message text
        always encoded as plain text (app/engine/chat_encode.py)."""
        return encode_chat(self.hf, messages, add_generation_prompt)
