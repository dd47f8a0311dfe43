"""The one documentation prompt, rendered through the model's own chat template.

Every request starts with the same system prompt, so an engine with prefix caching computes it
once. `PROMPT_VERSION` changes whenever the text or the layout below changes, so stored results
can tell which prompt produced them.

Three template families are handled:
- ordinary chat templates (ChatML, Llama 3, ...): system message + user message;
- templates that reject (or silently drop) a system message: the system prompt is folded into
  the user message;
- models trained on `code` -> `doc` turns (../shared/models/docstring-*: their template's
  generation prompt is `<|im_start|>doc`): one `code` message holding the source only, since
  that is the only thing they were trained to see.
"""
from __future__ import annotations

from typing import Any

from app.llm.types import ChunkLike, as_chunk

PROMPT_VERSION = "doc-prompt-v1"

SYSTEM_PROMPT = (
    "You are an expert software engineer who documents source code. You will be given one unit "
    "of code (a function, method, class or module) with its language, file path, kind, name and "
    "signature, and sometimes context such as summaries of the functions it calls.\n\n"
    "Write a concise docstring-style description of that code, in this order:\n"
    "1. A one-line summary in the imperative mood of what the code does.\n"
    "2. Parameters: each parameter with its type and meaning, one line each.\n"
    "3. Returns: what is returned (or yielded) and when.\n"
    "4. Raises: the exceptions the code raises and under which conditions.\n"
    "Leave out sections that do not apply. For a class, describe its purpose and main "
    "attributes instead of parameters.\n\n"
    "Rules: describe only behaviour visible in the code or its context; never invent details. "
    "Never restate, rewrite, fix or modify the code, and include no code blocks. "
    "Output only the documentation text, with no greeting or commentary."
)

# Role names a code->doc model expects, and the marker its template emits as generation prompt.
CODE_ROLE = "code"
_DOC_GENERATION_MARKER = "<|im_start|>doc"


def format_chunk(chunk: ChunkLike) -> str:
    """The user message for one chunk: a header of known fields, optional context, then the code."""
    c = as_chunk(chunk)
    lines = [f"Language: {c.language or 'unknown'}"]
    if c.path:
        lines.append(f"Path: {c.path}")
    if c.kind:
        lines.append(f"Kind: {c.kind}")
    if c.name:
        lines.append(f"Name: {c.name}")
    if c.signature:
        lines.append(f"Signature: {c.signature}")
    if c.context.strip():
        lines.append("Context:\n" + c.context.strip())
    lines.append(f"Code:\n```{c.language}\n{c.code.rstrip()}\n```")
    return "\n".join(lines)


def build_messages(chunk: ChunkLike) -> list[dict[str, str]]:
    """System + user messages for a chat model (the form most chat templates expect)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": format_chunk(chunk)},
    ]


def _apply(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # transformers 5 with tokenize=False returns a str; be sure
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _template_of(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruct/chat model or set tokenizer.chat_template to a Jinja template"
        )
    if isinstance(template, dict):  # named templates: the default one renders chats
        template = template.get("default", "")
    return str(template)


def is_code_doc_template(tokenizer: Any) -> bool:
    """True for templates of models trained on `code` -> `doc` turns.

    Detected by what the template emits as generation prompt (the text `add_generation_prompt`
    adds), not by the model's name.
    """
    _template_of(tokenizer)
    probe = [{"role": CODE_ROLE, "content": "x"}]
    try:
        with_prompt = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        without = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    except Exception:  # the template rejects a `code` role: not a code->doc model
        return False
    if not (isinstance(with_prompt, str) and with_prompt.startswith(without)):
        return False
    return _DOC_GENERATION_MARKER in with_prompt[len(without):]


def prompt_messages(tokenizer: Any, chunk: ChunkLike) -> list[dict[str, str]]:
    """The messages sent for one chunk, in the form this tokenizer's chat template takes."""
    from jinja2.exceptions import TemplateError

    c = as_chunk(chunk)
    if is_code_doc_template(tokenizer):
        return [{"role": CODE_ROLE, "content": c.code}]
    messages = build_messages(c)
    try:
        if SYSTEM_PROMPT in _apply(tokenizer, messages):
            return messages
        # Some templates drop system messages without an error; fold it in below instead.
    except TemplateError:
        pass  # e.g. "System role not supported" (Gemma, older Mistral templates)
    return [{"role": "user", "content": SYSTEM_PROMPT + "\n\n" + messages[1]["content"]}]


def render_prompt(tokenizer: Any, chunk: ChunkLike) -> str:
    """The full prompt text for one chunk, through the tokenizer's chat template (for display and
    tests). To run it, use `prompt_ids`: encoding this text would turn control-token text in the
    code (`<|im_end|>`, ...) into control tokens."""
    return _apply(tokenizer, prompt_messages(tokenizer, chunk))


def prompt_ids(tokenizer: Any, chunk: ChunkLike) -> list[int]:
    """The prompt's token ids: special tokens only where the template puts them; the chunk's code,
    path and context are always plain text (app/engine/chat_encode.py). For ordinary code these
    are exactly the ids of encoding `render_prompt` (no BOS added: the template holds any)."""
    from app.engine.chat_encode import encode_chat  # lazy: keeps torch out of `docgen estimate/check`

    return encode_chat(tokenizer, prompt_messages(tokenizer, chunk))


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` alone, as the generators tokenize a chunk's code (plain text: control-token
    text counts as the ordinary tokens it is encoded as)."""
    from app.engine.chat_encode import encode_text

    return len(encode_text(tokenizer, text))


def count_prompt_tokens(tokenizer: Any, chunk: ChunkLike) -> int:
    """Tokens of the whole prompt for `chunk` (system prompt, template and code), as sent."""
    return len(prompt_ids(tokenizer, chunk))
