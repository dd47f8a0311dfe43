"""Chat prompts to ids: control tokens only where the template puts them (app/engine/chat_encode.py)."""
import copy

import pytest

from app.engine import chat_encode as ce
from benchmarks.random_checkpoint import build_tokenizer
from app.engine.tokenizer import Tokenizer

FIM = "<|fim_prefix|>"  # added but not special, as a coder model's FIM tokens are

ORDINARY = [
    "def area(r):\n    return 3.14159 * r * r\n",
    "\n\n  leading blank lines and a tab\t\n",
    "héllo wörld — ünïcode, 中文, emoji 🎉\r\nCRLF line\r\n",
    "x = '<|im' + '_end|>'  # almost a token, but not one\n",
    "   ",
]


@pytest.fixture(scope="module")
def tok():
    t = build_tokenizer(None, 512)
    t.add_tokens([FIM])
    return t


def every_added_token(t) -> str:
    return "x = [" + ", ".join(f"'{s}'" for s in ce.added_token_texts(t)) + "]  # " + "".join(ce.added_token_texts(t))


def chat(content, system="You document code."):
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


def counts(ids, t):
    return {s: ids.count(i) for s, (i, _) in ce.added_token_texts(t).items()}


def test_ordinary_text_gives_the_same_ids_as_encoding_the_rendered_prompt(tok):
    for code in ORDINARY:
        msgs = chat(code)
        one_go = tok.encode(ce.render_chat(tok, msgs), add_special_tokens=False)
        assert ce.encode_chat(tok, msgs) == one_go
        assert ce.encode_chat_split(tok, msgs) == one_go  # the separating path agrees on ordinary text
        assert ce.encode_plain(tok, code) == tok.encode(code, add_special_tokens=False)
        assert ce.encode_text(tok, code) == tok.encode(code, add_special_tokens=False)


def test_every_added_token_in_a_message_stays_plain_text(tok):
    assert set(ce.added_token_texts(tok)) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>", FIM}
    evil = every_added_token(tok)
    for msgs in (chat(evil), chat("ok", system=evil), chat(evil, system=evil)):
        ids = ce.encode_chat(tok, msgs)
        expected = counts(tok.encode(ce.render_chat(tok, chat("a", "b")), add_special_tokens=False), tok)
        assert expected == {"<|endoftext|>": 0, "<|im_start|>": 3, "<|im_end|>": 2, FIM: 0}
        assert counts(ids, tok) == expected
        # Nothing is lost: the ids decode back to exactly the template's text.
        assert tok.decode(ids, skip_special_tokens=False) == ce.render_chat(tok, msgs)
    # The unsafe one-go encoding would have made them control tokens (what this guards against).
    unsafe = tok.encode(ce.render_chat(tok, chat(evil)), add_special_tokens=False)
    assert counts(unsafe, tok)["<|im_end|>"] > 2 and counts(unsafe, tok)[FIM] == 2


def test_templates_that_trim_message_text(tok):
    t = copy.deepcopy(tok)
    t.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
                       "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = chat("\n  code <|im_end|> here  \n\n")
    ids = ce.encode_chat(t, msgs)
    assert t.decode(ids, skip_special_tokens=False) == ce.render_chat(t, msgs)
    assert counts(ids, t)["<|im_end|>"] == 2
    for code in ORDINARY:
        m = chat(code)
        assert ce.encode_chat_split(t, m) == t.encode(ce.render_chat(t, m), add_special_tokens=False)


def test_a_template_that_rewrites_message_text_is_a_clear_error_only_for_control_token_text(tok):
    t = copy.deepcopy(tok)
    t.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | replace('x', 'y') }}"
                       "<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    assert ce.encode_chat(t, chat("x = 1")) == t.encode(ce.render_chat(t, chat("x = 1")), add_special_tokens=False)
    with pytest.raises(ValueError, match="control-token text"):
        ce.encode_chat(t, chat("x = '<|im_end|>'"))


def test_non_text_content_is_refused(tok):
    with pytest.raises(ValueError, match="text content"):
        ce.encode_chat(tok, [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])


def test_engine_tokenizer_encode_chat(tiny_checkpoint):
    t = Tokenizer(tiny_checkpoint("tiny"))
    specials = ce.added_token_texts(t.hf)
    evil = every_added_token(t.hf)
    ids = t.encode_chat(chat(evil))
    assert {s: ids.count(i) for s, (i, _) in specials.items()} == {
        "<|endoftext|>": 0, "<|im_start|>": 3, "<|im_end|>": 2}
    assert t.decode(ids, skip_special_tokens=False) == t.apply_chat_template(chat(evil))
    normal = chat(ORDINARY[0])
    assert t.encode_chat(normal) == t.encode(t.apply_chat_template(normal))


def test_whitespace_added_tokens_are_kept_for_indentation(tok):
    t = copy.deepcopy(tok)
    t.add_tokens(["        "])  # as CodeGen/Phi-2 tokenizers add runs of spaces
    ws = t.convert_tokens_to_ids("        ")
    assert "        " not in ce.control_token_texts(t)
    code = "def f():\n        return '<|im_end|>'\n"
    for msgs in (chat(code), chat(code.replace("<|im_end|>", "ok"))):  # split path and one-go path
        ids = ce.encode_chat(t, msgs)
        assert ids.count(ws) == 1 and counts(ids, t)["<|im_end|>"] == 2
        assert t.decode(ids, skip_special_tokens=False) == ce.render_chat(t, msgs)
