"""Code being documented cannot steer the model: control-token text in a chunk stays plain text in
the prompt the baseline and the optimized generators actually run (issue 12, item 2)."""
import pytest

from app.engine.chat_encode import added_token_texts
from benchmarks.random_checkpoint import build_tokenizer
from app.llm import prompts
from app.llm.types import CodeChunk

NORMAL = CodeChunk(code="def area(r):\n    return 3.14159 * r * r\n", path="geo.py", name="area",
                   signature="def area(r)", context="No callees.")


def evil_chunk(tok) -> CodeChunk:
    toks = list(added_token_texts(tok))
    code = ("def f():\n    '''Ends here " + "".join(toks) + "'''\n    return " + repr(toks) + "\n")
    # Path, name and context are the user's text too.
    return CodeChunk(code=code, path=f"a{toks[-1]}.py", name="f", context=f"calls {toks[0]}")


def special_counts(ids, tok):
    return {s: ids.count(i) for s, (i, _) in added_token_texts(tok).items()}


def template_counts(tok):
    """The template's own control tokens: those of the prompt for a chunk with no such text."""
    return special_counts(prompts.prompt_ids(tok, NORMAL), tok)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return str(tiny_checkpoint("tiny", overrides={"max_position_embeddings": 2048}))


def test_prompt_ids_keep_only_the_template_s_control_tokens():
    tok = build_tokenizer(None, 512)
    evil = evil_chunk(tok)
    assert template_counts(tok) == {"<|endoftext|>": 0, "<|im_start|>": 3, "<|im_end|>": 2}
    ids = prompts.prompt_ids(tok, evil)
    assert special_counts(ids, tok) == template_counts(tok)
    assert tok.decode(ids, skip_special_tokens=False) == prompts.render_prompt(tok, evil)
    assert prompts.count_prompt_tokens(tok, evil) == len(ids)
    # Ordinary chunks: exactly the ids of the rendered text, as before (prefix cache, oracle tests).
    assert prompts.prompt_ids(tok, NORMAL) == tok.encode(prompts.render_prompt(tok, NORMAL), add_special_tokens=False)


def test_code_doc_template_of_the_trained_model(trained_docstring_model):
    from transformers import AutoTokenizer

    path = trained_docstring_model
    tok = AutoTokenizer.from_pretrained(path)
    assert template_counts(tok) == {"<|endoftext|>": 0, "<|im_start|>": 2, "<|im_end|>": 1}
    assert special_counts(prompts.prompt_ids(tok, evil_chunk(tok)), tok) == template_counts(tok)
    for code in (NORMAL.code, "\n\nclass A:\n\tpass\n", "x = 'héllo'  # ünïcode\r\n"):
        assert prompts.prompt_ids(tok, code) == tok.encode(prompts.render_prompt(tok, code), add_special_tokens=False)


def test_baseline_generator_runs_the_safe_ids(ckpt):
    from app.llm.local_client import create_local_generator

    gen = create_local_generator(ckpt, quantization="none", device="cpu", max_new_tokens=2, max_seq_length=2048)
    sent = []
    real = gen.model.generate

    def spy(ids, **kw):  # the ids transformers' generate really receives
        sent.append(ids[0].tolist())
        return real(ids, **kw)

    gen.model.generate = spy
    try:
        evil = evil_chunk(gen.tokenizer)
        r, n = gen.generate_batch([evil, NORMAL])
    finally:
        gen.close()
    assert r.ok and n.ok, (r.error, n.error)
    assert special_counts(sent[0], gen.tokenizer) == template_counts(gen.tokenizer)
    assert sent[0] == prompts.prompt_ids(gen.tokenizer, evil) and r.prompt_tokens == len(sent[0])
    assert sent[1] == gen.tokenizer.encode(prompts.render_prompt(gen.tokenizer, NORMAL), add_special_tokens=False)


def test_optimized_generator_runs_the_safe_ids(ckpt):
    from app.llm.local_client_optimized import create_optimized_local_generator

    gen = create_optimized_local_generator(ckpt, quantization="none", max_batch_size=2, use_flash_attention=False,
                                           device="cpu", max_new_tokens=2, max_seq_length=2048)
    seen = []
    real = gen._to_result

    def spy(c, out, submitted):  # the prompt ids the engine reports it ran
        seen.append(list(out.prompt_token_ids))
        return real(c, out, submitted)

    gen._to_result = spy
    try:
        evil = evil_chunk(gen.tokenizer)
        r = gen.generate(evil)
        n = gen.generate(NORMAL)
    finally:
        gen.close()
    assert r.ok and n.ok, (r.error, n.error)
    assert special_counts(seen[0], gen.tokenizer) == template_counts(gen.tokenizer)
    assert seen[0] == prompts.prompt_ids(gen.tokenizer, evil)
    assert seen[1] == gen.tokenizer.encode(prompts.render_prompt(gen.tokenizer, NORMAL), add_special_tokens=False)
