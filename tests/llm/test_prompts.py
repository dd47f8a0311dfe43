"""The documentation prompt: content, rendering through chat templates, and the special cases."""
import copy

import pytest

from benchmarks.random_checkpoint import build_tokenizer
from app.llm import prompts
from app.llm.types import CodeChunk

CHUNK = CodeChunk(
    code="def area(r):\n    return 3.14159 * r * r\n",
    path="geometry/circle.py",
    name="area",
    kind="function",
    signature="def area(r)",
    context="No callees.",
)

CODE_DOC_TEMPLATE = (  # the template of ../shared/models/docstring-13m
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>doc\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chatml_tok():
    return build_tokenizer(None, 512)


def _with_template(tok, template):
    t = copy.deepcopy(tok)
    t.chat_template = template
    return t


def test_version_and_system_prompt_content():
    assert isinstance(prompts.PROMPT_VERSION, str) and prompts.PROMPT_VERSION
    for must in ("summary", "Parameters", "Returns", "Raises", "Never restate", "modify the code"):
        assert must in prompts.SYSTEM_PROMPT


def test_system_prompt_length_in_tokens():
    # An 8000-token BPE trained on the standard library (less efficient on English than a
    # 150k-token model tokenizer, so the bound is a little wider than the 150-250 target).
    tok = build_tokenizer(None, 8000)
    n = len(tok(prompts.SYSTEM_PROMPT).input_ids)
    assert 150 <= n <= 300, n


def test_chunk_template_fields():
    text = prompts.format_chunk(CHUNK)
    assert text.splitlines()[:5] == [
        "Language: python", "Path: geometry/circle.py", "Kind: function", "Name: area", "Signature: def area(r)",
    ]
    assert "Context:\nNo callees." in text
    assert text.endswith("```python\ndef area(r):\n    return 3.14159 * r * r\n```")
    bare = prompts.format_chunk("x = 1")  # plain strings are chunks too; empty fields are left out
    assert "Path:" not in bare and "Name:" not in bare and "Context:" not in bare
    msgs = prompts.build_messages({"code": "x = 1"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == prompts.SYSTEM_PROMPT and msgs[1]["content"] == bare


def test_render_chatml(chatml_tok):
    text = prompts.render_prompt(chatml_tok, CHUNK)
    expected = (
        f"<|im_start|>system\n{prompts.SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{prompts.format_chunk(CHUNK)}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert text == expected
    assert not prompts.is_code_doc_template(chatml_tok)


def test_prompts_share_the_system_prefix_token_for_token(chatml_tok):
    a = chatml_tok(prompts.render_prompt(chatml_tok, CHUNK), add_special_tokens=False).input_ids
    b = chatml_tok(prompts.render_prompt(chatml_tok, "class B:\n    pass\n"), add_special_tokens=False).input_ids
    head = chatml_tok(f"<|im_start|>system\n{prompts.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n",
                      add_special_tokens=False).input_ids
    assert a[: len(head)] == b[: len(head)] == head


def test_code_doc_template_gets_the_code_only(chatml_tok):
    tok = _with_template(chatml_tok, CODE_DOC_TEMPLATE)
    assert prompts.is_code_doc_template(tok)
    assert prompts.render_prompt(tok, CHUNK) == f"<|im_start|>code\n{CHUNK.code}<|im_end|>\n<|im_start|>doc\n"


def test_shared_docstring_model_template(trained_docstring_model):
    from transformers import AutoTokenizer

    path = trained_docstring_model
    tok = AutoTokenizer.from_pretrained(path)
    assert prompts.is_code_doc_template(tok)
    assert prompts.render_prompt(tok, CHUNK) == f"<|im_start|>code\n{CHUNK.code}<|im_end|>\n<|im_start|>doc\n"


def test_template_rejecting_system_role_gets_it_folded_into_user(chatml_tok):
    rejecting = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '[' + m['role'] + ']' + m['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '[assistant]' }}{% endif %}"
    )
    text = prompts.render_prompt(_with_template(chatml_tok, rejecting), CHUNK)
    assert text == f"[user]{prompts.SYSTEM_PROMPT}\n\n{prompts.format_chunk(CHUNK)}\n[assistant]"


def test_template_silently_dropping_system_role_gets_it_folded(chatml_tok):
    dropping = (
        "{% for m in messages %}{% if m['role'] != 'system' %}"
        "{{ '[' + m['role'] + ']' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '[assistant]' }}{% endif %}"
    )
    text = prompts.render_prompt(_with_template(chatml_tok, dropping), CHUNK)
    assert text.startswith(f"[user]{prompts.SYSTEM_PROMPT}\n\n")


def test_missing_template_is_a_clear_error(chatml_tok):
    tok = _with_template(chatml_tok, None)
    with pytest.raises(ValueError, match="no chat template"):
        prompts.render_prompt(tok, CHUNK)


def test_bad_chunks():
    with pytest.raises(ValueError, match="'code' key"):
        prompts.build_messages({"source": "x"})
    with pytest.raises(TypeError):
        prompts.render_prompt(None, 42)
