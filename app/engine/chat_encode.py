"""Chat prompts to token ids, with special tokens only where the chat template puts them.

Encoding the rendered prompt text in one go (`tokenizer.encode(apply_chat_template(...))`) turns
every `<|im_end|>`, `<|im_start|>`, `<|endoftext|>` (or any other added token: a coder model's
FIM tokens, tool-call markers) that appears in a message, e.g. in code being documented, into
that control token: the message can close its own turn, open a new one or end generation. Here
the template is rendered around placeholders, so the message text is known exactly; only control
tokens in the template's own text become their ids, and message text is encoded as the ordinary
text it is. (Added tokens that are only whitespace, used for indentation by some code
tokenizers, are not control tokens and are kept.)

When no message contains the text of any control token, the ids are those of encoding the rendered
prompt in one go (the same call as before), so ordinary prompts, prefix caching and comparisons
with transformers are unchanged. `encode_chat_split` is the separating path itself; tests check
that it agrees with the one-go encoding on ordinary text.
"""
from __future__ import annotations

import re
import uuid
from typing import Any, Sequence


def render_chat(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
    """The template's text for `messages` (a str, whatever the transformers version returns)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def added_token_texts(tokenizer: Any) -> dict[str, tuple[int, Any]]:
    """Text -> (id, AddedToken) for every special or added token of the tokenizer."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {str(t): (int(i), t) for i, t in decoder.items() if str(t)}


def control_token_texts(tokenizer: Any) -> dict[str, tuple[int, Any]]:
    """The added tokens that message text must never produce: all of them except runs of
    whitespace, which some code tokenizers add for indentation (CodeGen, Phi-2) and which mean
    nothing but the whitespace they stand for."""
    return {t: v for t, v in added_token_texts(tokenizer).items() if t.strip()}


def contains_control_text(tokenizer: Any, text: str) -> list[str]:
    """The control-token texts that occur in `text` (also after the tokenizer's normalizer)."""
    variants = [text]
    norm = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if norm is not None:
        variants.append(norm.normalize_str(text))
    return [t for t in control_token_texts(tokenizer) if any(t in v for v in variants)]


def encode_chat(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the chat prompt; message text never becomes a control token."""
    contents = [_content(m) for m in messages]
    if not any(contains_control_text(tokenizer, c) for c in contents):
        # Nothing in the messages could be taken for a control token: the usual one-go encoding.
        rendered = render_chat(tokenizer, messages, add_generation_prompt)
        return list(tokenizer.encode(rendered, add_special_tokens=False))
    return encode_chat_split(tokenizer, messages, add_generation_prompt)


def encode_chat_split(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
    """Render around placeholders, encode message text as text, assemble the ids."""
    pieces = chat_pieces(tokenizer, messages, add_generation_prompt)
    controls = control_token_texts(tokenizer)
    pattern = _alternation(controls)
    ids: list[int] = []
    span: list[str] = []  # text waiting to be encoded: template text and message text mixed
    for is_template, text in pieces:
        if not is_template or pattern is None:
            span.append(text)
            continue
        pos = 0
        for m in pattern.finditer(text):  # the template's own control tokens
            token_id, token = controls[m.group()]
            start, end = _strip_around(token, text, m.start(), m.end())
            span.append(text[pos:start])
            ids += encode_text(tokenizer, "".join(span))
            span = []
            ids.append(token_id)
            pos = end
        span.append(text[pos:])
    ids += encode_text(tokenizer, "".join(span))
    return ids


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """`text` with no control token recognized in it: control-token text is encoded as the
    ordinary pieces it is made of, everything between with the tokenizer's own encode."""
    pattern = _alternation(control_token_texts(tokenizer))
    if pattern is None:
        return list(tokenizer.encode(text, add_special_tokens=False)) if text else []
    ids: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            ids += tokenizer.encode(text[pos:m.start()], add_special_tokens=False)
        ids += encode_plain(tokenizer, m.group())
        pos = m.end()
    if pos < len(text):
        ids += tokenizer.encode(text[pos:], add_special_tokens=False)
    return ids


def chat_pieces(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[tuple[bool, str]]:
    """The rendered prompt as (is_template_text, text) pieces; their concatenation is exactly the
    template's rendering of the real messages (checked), message text in the non-template pieces."""
    contents = [_content(m) for m in messages]
    rendered = render_chat(tokenizer, messages, add_generation_prompt)
    nonce = uuid.uuid4().hex
    slots = [f"DOCGENSLOT{i}X{nonce}" for i in range(len(messages))]
    probe = [dict(m, content=s) for m, s in zip(messages, slots)]
    skeleton = render_chat(tokenizer, probe, add_generation_prompt)
    parts = re.split(f"DOCGENSLOT(\\d+)X{nonce}", skeleton)  # template, slot index, template, ...
    pieces: list[tuple[bool, str]] = []
    pos = 0  # how much of `rendered` the pieces so far account for
    for k, part in enumerate(parts):
        if k % 2 == 0:
            pieces.append((True, part))
            pos += len(part)
            continue
        content, after = contents[int(part)], parts[k + 1]
        # Templates may trim message text (Llama 3: `content | trim`); take the form that fits.
        for cand in (content, content.strip(), content.lstrip(), content.rstrip()):
            if rendered.startswith(cand + after, pos):
                break
        else:
            cand = content
        pieces.append((False, cand))
        pos += len(cand)
    if "".join(t for _, t in pieces) != rendered:
        found = sorted({t for c in contents for t in contains_control_text(tokenizer, c)})
        raise ValueError(
            f"the input contains the control-token text {found} and this model's chat template rewrites message "
            "text in a way that cannot be followed, so it cannot be kept as plain text; remove that text from "
            "the input or use a model whose template inserts messages verbatim")
    return [p for p in pieces if p[1]]


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """`text` as ordinary text: no special or added token at all is recognized in it.

    Runs the fast tokenizer's own pipeline (normalizer, pre-tokenizer, model) without its
    added-token matching, which `split_special_tokens=True` only turns off for special tokens
    (a coder model's FIM tokens, for instance, are added but not special).
    """
    if not text:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python-only tokenizer: the library's own switch, then a check
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        added = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
        leaked = [i for i in ids if i in added]
        if leaked:
            raise ValueError(f"this (slow) tokenizer turns text into added tokens {leaked[:5]} even with "
                             "split_special_tokens=True; use a model with a fast tokenizer (tokenizer.json)")
        return list(ids)
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
    words = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer is not None else [
        (normalized, (0, len(normalized)))]
    return [tok.id for word, _ in words for tok in backend.model.tokenize(word)]


def _alternation(texts) -> re.Pattern | None:
    # Longest first, so that a token is never matched as a shorter one it starts with.
    return re.compile("|".join(re.escape(t) for t in sorted(texts, key=len, reverse=True))) if texts else None


def _content(message: dict) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError(f"chat messages need text content (a str); got {type(content).__name__} in {message!r:.80}")
    return content


def _strip_around(token: Any, text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a match over the whitespace an lstrip/rstrip added token swallows (as the tokenizer does)."""
    if getattr(token, "lstrip", False):
        while start > 0 and text[start - 1].isspace():
            start -= 1
    if getattr(token, "rstrip", False):
        while end < len(text) and text[end].isspace():
            end += 1
    return start, end
