"""Run llama.cpp's `convert_hf_to_gguf.py` on a checkpoint whose tokenizer was trained locally.

The converter identifies a BPE tokenizer's pre-tokenizer by hashing how it tokenizes a fixed text
and refuses hashes it does not know. The tokenizer of benchmarks/random_checkpoint.py is trained
here, so its hash is new, but its pre-tokenizer is Qwen2's exactly (same split regex, byte-level,
NFC). This wrapper, run as a subprocess, wraps the converter's `get_vocab_base_pre` at runtime:
when the converter does not know the hash and the checkpoint's tokenizer.json has Qwen2's
pre-tokenizer, the answer is "qwen2"; anything else still fails as the converter would. No
llama.cpp file is edited.

    python benchmarks/llamacpp_convert.py LLAMA_CPP_SRC -- CHECKPOINT --outtype f32 --outfile X.gguf
"""
from __future__ import annotations

import json
import logging
import runpy
import sys
from pathlib import Path

# Qwen2's pre-tokenizer split (the regex of Qwen2's tokenizer.json; benchmarks/random_checkpoint.py
# trains with the same one). Kept as a literal so that a change over there shows up as a mismatch.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

log = logging.getLogger("llamacpp_convert")


def _split_regex(step: dict) -> str | None:
    if step.get("type") != "Split" or step.get("behavior") != "Isolated" or step.get("invert"):
        return None
    pattern = step.get("pattern") or {}
    return pattern.get("Regex")


def qwen2_pre_tokenizer(tokenizer_json: dict) -> str | None:
    """"qwen2" when this tokenizer.json pre-tokenizes exactly as Qwen2's does, else None.

    Qwen2's pipeline: NFC normalizer, then a Sequence of Split(QWEN2_SPLIT_REGEX, isolated) and
    ByteLevel without its own regex. Anything else (another regex, a missing NFC, a ByteLevel that
    splits again) is a different pre-tokenizer and must not be passed off as Qwen2's.
    """
    norm = tokenizer_json.get("normalizer") or {}
    if norm.get("type") != "NFC":
        return None
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    if _split_regex(split) != QWEN2_SPLIT_REGEX:
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex", True):
        return None
    return "qwen2"


def mapped_pre_tokenizer(model_dir: str | Path) -> str | None:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    return qwen2_pre_tokenizer(json.loads(path.read_text(encoding="utf-8")))


def _install_mapping(llama_src: Path) -> None:
    """Wrap the converter's TextModel.get_vocab_base_pre (in this process only)."""
    sys.path[:0] = [str(llama_src), str(llama_src / "gguf-py")]
    import conversion.base as base  # llama.cpp's converter package

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            name = mapped_pre_tokenizer(self.dir_model)
            if name is None:
                raise
            log.warning("pre-tokenizer hash unknown to the converter; %s/tokenizer.json has Qwen2's "
                        "pre-tokenizer exactly, so it is written as %r", self.dir_model, name)
            return name

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: llamacpp_convert.py LLAMA_CPP_SRC -- <convert_hf_to_gguf.py arguments>")
    llama_src = Path(argv[0])
    converter = llama_src / "convert_hf_to_gguf.py"
    if not converter.is_file():
        raise SystemExit(f"{converter} not found: LLAMA_CPP_SRC must be llama.cpp's source folder")
    logging.basicConfig(level=logging.INFO)
    _install_mapping(llama_src)
    sys.argv = [str(converter), *argv[2:]]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
