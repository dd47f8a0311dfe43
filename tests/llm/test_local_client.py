"""The baseline LocalDocGenerator on tiny random-weight checkpoints (and the trained one if present)."""
import asyncio
import warnings

import pytest
import torch

from app.llm.local_client import LocalDocGenerator, create_local_generator
from app.llm.prompts import render_prompt
from app.llm.types import CodeChunk, DocGenerator

NEW = 6
CHUNKS = [
    CodeChunk(code="def add(a, b):\n    return a + b\n", name="add", path="m.py"),
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    {"code": "def boom():\n    raise RuntimeError('no')\n", "name": "boom"},
]


@pytest.fixture(scope="module")
def gen(tiny_checkpoint):
    g = create_local_generator(str(tiny_checkpoint("tiny-untied")), quantization="none", max_new_tokens=NEW)
    yield g
    g.close()


def reference_greedy(model, tokenizer, prompt, n_new, eos_ids):
    """Obviously correct greedy decoding: full forward over the whole sequence every step, no cache."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    with torch.no_grad():
        for _ in range(n_new):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] in eos_ids:
                break
    return out


def test_greedy_equals_reference_loop(gen):
    results = gen.generate_batch(CHUNKS)
    assert [r.chunk_id for r in results] == [gen_chunk_id(c) for c in CHUNKS]
    for chunk, r in zip(CHUNKS, results):
        assert r.ok and r.finish_reason == "length" and r.completion_tokens == NEW
        ref = reference_greedy(gen.model, gen.tokenizer, render_prompt(gen.tokenizer, chunk), NEW, gen.eos_token_ids)
        assert r.extra["token_ids"] == ref
        assert r.text == gen.tokenizer.decode(ref, skip_special_tokens=True).strip()
        assert r.prompt_tokens == len(gen.tokenizer(render_prompt(gen.tokenizer, chunk), add_special_tokens=False).input_ids)
        assert 0 < r.time_to_first_token <= r.total_time


def gen_chunk_id(c):
    from app.llm.types import as_chunk

    return as_chunk(c).id


def test_bad_chunks_fail_alone(gen):
    long_code = "def f():\n" + "    x = 1\n" * 3000
    results = gen.generate_batch(["", CHUNKS[0], "   \n", long_code, CHUNKS[1]])
    assert [r.finish_reason for r in results] == ["error", "length", "error", "error", "length"]
    assert "no code" in results[0].error and "no code" in results[2].error
    assert "max_seq_length" in results[3].error and results[3].prompt_tokens > gen.max_seq_length
    assert results[1].ok and results[4].ok and results[1].extra["token_ids"] == gen.generate(CHUNKS[0]).extra["token_ids"]
    # Sequential: each chunk waited for the ones before it.
    assert results[4].queue_time >= results[1].total_time
    with pytest.raises(TypeError):
        gen.generate_batch([CHUNKS[0], 42])


def test_prompt_plus_output_stay_within_max_seq_length(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny-untied"))
    probe = LocalDocGenerator(path, "none", max_new_tokens=NEW)
    n = probe.generate(CHUNKS[0]).prompt_tokens
    g = LocalDocGenerator(path, "none", max_new_tokens=NEW, max_seq_length=n + 2)
    r = g.generate(CHUNKS[0])
    assert r.ok and r.completion_tokens == 2 and r.finish_reason == "length"


def test_async_api_matches_sync(gen):
    sync = gen.generate_batch(CHUNKS)

    async def main():
        batch = await gen.generate_batch_async(CHUNKS)
        singles = await asyncio.gather(*(gen.generate_async(c) for c in CHUNKS))
        return batch, singles

    batch, singles = asyncio.run(main())
    ids = [r.extra["token_ids"] for r in sync]
    assert [r.extra["token_ids"] for r in batch] == ids
    assert [r.extra["token_ids"] for r in singles] == ids
    assert isinstance(gen, DocGenerator)


def test_eos_gives_stop(tiny_checkpoint):
    g = LocalDocGenerator(str(tiny_checkpoint("tiny-untied")), "none", max_new_tokens=NEW)
    first = g.generate(CHUNKS[0]).extra["token_ids"][0]
    with torch.no_grad():  # make EOS's logit twice the greedy token's: EOS is now the argmax
        head = g.model.get_output_embeddings().weight
        head[g.eos_token_ids[0]] = 2 * head[first]
    r = g.generate(CHUNKS[0])
    assert r.finish_reason == "stop" and r.extra["token_ids"] == [g.eos_token_ids[0]]
    assert r.completion_tokens == 1 and r.text == ""
    g.ignore_eos = True
    r = g.generate(CHUNKS[0])
    assert r.finish_reason == "length" and r.completion_tokens == NEW


def test_quantization_fallback_warns_once_and_report_tells_the_truth(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("on a CUDA machine 4-bit may really be available")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = create_local_generator(str(tiny_checkpoint("tiny")), quantization="4bit", max_new_tokens=2)
        g.generate_batch(CHUNKS[:2])
    mine = [w for w in caught if "quantization='4bit'" in str(w.message)]
    assert len(mine) == 1 and "full precision" in str(mine[0].message)
    rep = g.report()
    assert rep["quantization"] == "none" and rep["quantization_requested"] == "4bit"
    assert rep["device"] == "cpu" and rep["dtype"] == "float32" and rep["notes"]
    assert rep["model"] == str(tiny_checkpoint("tiny")) and rep["prompt_version"]


def test_sampling_with_seed_is_reproducible(tiny_checkpoint):
    g = create_local_generator(str(tiny_checkpoint("tiny")), "none", max_new_tokens=NEW, temperature=1.0, seed=7)
    a, b = g.generate_batch([CHUNKS[0], CHUNKS[0]])
    assert a.extra["token_ids"] == b.extra["token_ids"] and a.completion_tokens == NEW


def test_close_and_context_managers(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))

    async def main():
        async with create_local_generator(path, "none", max_new_tokens=2) as g:
            r = await g.generate_async(CHUNKS[0])
        return g, r

    g, r = asyncio.run(main())
    assert r.ok and g.report()["closed"]
    with pytest.raises(RuntimeError, match="closed"):
        g.generate_batch(CHUNKS)
    g.close()  # idempotent


def test_bad_arguments(tmp_path, tiny_checkpoint):
    with pytest.raises(ValueError, match="does not exist"):
        create_local_generator(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="config.json"):
        create_local_generator(str(tmp_path))
    with pytest.raises(ValueError, match="local directory path"):
        create_local_generator("Qwen/Definitely-Not-Cached-7B", local_files_only=True)
    path = str(tiny_checkpoint("tiny"))
    with pytest.raises(ValueError, match="quantization"):
        create_local_generator(path, quantization="3bit")
    with pytest.raises(ValueError, match="unknown arguments"):
        create_local_generator(path, quantization="none", max_batch_size=8)
    with pytest.raises(ValueError, match="temperature"):
        create_local_generator(path, quantization="none", temperature=-1)


def test_trained_docstring_model(trained_docstring_model):
    path = trained_docstring_model
    g = create_local_generator(str(path), quantization="none", max_new_tokens=12)
    r = g.generate(CHUNKS[0])
    assert r.ok and r.completion_tokens > 0
    prompt = render_prompt(g.tokenizer, CHUNKS[0])
    assert prompt.startswith("<|im_start|>code\n")  # the role the model was trained on
    assert r.extra["token_ids"] == reference_greedy(g.model, g.tokenizer, prompt, 12, g.eos_token_ids)
    g.close()
