"""OptimizedLocalDocGenerator: greedy output equals the baseline's, bad chunks, warnings, report()."""
import asyncio
import warnings

import pytest

from app.llm import optimizations
from benchmarks.bench_chunks import load_chunks
from app.llm.local_client_optimized import OptimizedLocalDocGenerator, create_optimized_local_generator
from app.llm.types import CodeChunk, DocGenerator

MAX_NEW = 10


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    # Room for the ~550-token documentation prompt (the tiny preset's own limit is 512).
    return str(tiny_checkpoint("tiny", overrides={"max_position_embeddings": 2048}))


@pytest.fixture(scope="module")
def gen(ckpt):
    g = create_optimized_local_generator(ckpt, quantization="none", max_batch_size=4, use_flash_attention=False,
                                         device="cpu", max_new_tokens=MAX_NEW, max_seq_length=2048)
    yield g
    g.close()


def test_greedy_output_equals_the_baseline_token_for_token(ckpt, gen):
    from app.llm.local_client import create_local_generator

    chunks = load_chunks(3) + ["def add(a, b):\n    return a + b\n"]
    base = create_local_generator(ckpt, quantization="none", device="cpu", max_new_tokens=MAX_NEW, max_seq_length=2048)
    try:
        expected = base.generate_batch(chunks)
    finally:
        base.close()
    got = gen.generate_batch(chunks)
    assert [r.chunk_id for r in got] == [r.chunk_id for r in expected]
    for e, g in zip(expected, got):
        assert e.ok and g.ok, (e.error, g.error)
        assert g.extra["token_ids"] == e.extra["token_ids"]
        assert g.text == e.text
        assert g.prompt_tokens == e.prompt_tokens
    # The system prompt is shared: later chunks are served partly from the prefix cache.
    assert sum(r.cached_prompt_tokens for r in got) > 0


def test_bad_chunks_fail_alone_and_results_keep_input_order(gen):
    good = CodeChunk(code="def two():\n    return 2\n", name="two")
    too_long = "x = 1\n" * 3000  # far beyond max_seq_length=2048 tokens
    res = gen.generate_batch(["", good, too_long, {"code": "def one():\n    return 1\n"}, {"no_code": 1}])
    assert len(res) == 5
    assert res[0].finish_reason == "error" and "no code" in res[0].error
    assert res[1].ok and res[1].chunk_id == good.id and res[1].completion_tokens > 0
    assert res[2].finish_reason == "error" and "max_seq_length=2048" in res[2].error
    assert res[3].ok
    assert res[4].finish_reason == "error" and "'code'" in res[4].error


def test_satisfies_the_protocol_and_sync_call_inside_a_loop_is_refused(gen):
    assert isinstance(gen, DocGenerator)

    async def inner():
        with pytest.raises(RuntimeError, match="generate_batch_async"):
            gen.generate_batch(["def f():\n    pass\n"])
        return await gen.generate_async("def f():\n    pass\n")

    assert asyncio.run(inner()).ok


def _messages(record):
    return [str(w.message) for w in record]


def test_unavailable_optimizations_warn_once_each_and_report_tells_the_truth(ckpt):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")  # Python's usual setting: our per-generator registry must still fire
        g = create_optimized_local_generator(
            ckpt, quantization="none", enable_compilation=True, use_flash_attention=True,
            enable_speculative_decoding=True, device="cpu", max_new_tokens=4, max_seq_length=2048)
        try:
            g.generate_batch(["def f():\n    return 1\n"] * 3)
            rep, rep2 = g.report(), g.report()
            llm, stats = g._engine.llm, g.engine_stats
        finally:
            g.close()
    msgs = _messages(rec)
    assert len(msgs) == len(set(msgs)), msgs
    assert sum("enable_compilation=True" in m for m in msgs) == 1
    assert sum("use_flash_attention=True" in m and "CUDA" in m for m in msgs) == 1
    assert sum("enable_speculative_decoding=True" in m for m in msgs) == 1
    assert rep2["warnings"] == rep["warnings"] == msgs
    opts = rep["optimizations"]
    # Each claim is the value this request must give on the CPU, and the engine agrees.
    assert opts["compilation"]["active"] is False and "CUDA" in opts["compilation"]["detail"]
    assert opts["flash_attention"]["active"] is False
    assert opts["speculative_decoding"]["active"] is True and "method ngram" in opts["speculative_decoding"]["detail"]
    assert llm.spec is not None and llm.config.speculative.method == "ngram"
    assert opts["quantization"]["active"] is False
    assert opts["kv_cache_quantization"]["active"] is False
    assert opts["continuous_batching"]["active"] is True and llm.config.max_num_seqs == 8  # max_batch_size default
    assert opts["kv_cache_reuse"]["active"] is True and llm.prefix_caching is True
    assert stats["prefix_cache_hit_tokens"] > 0  # three identical prompts: the reuse really happened
    assert stats["max_seqs_in_step"] > 1  # and they ran in one batch
    assert set(rep["active"]) == {"continuous_batching", "kv_cache_reuse", "static_cache", "speculative_decoding"}
    assert set(rep["inactive"]) == {"compilation", "flash_attention", "quantization", "kv_cache_quantization"}

    # A second generator warns again (once per generator, not once per process); with one sequence
    # per step and no static cache, batching and prefix reuse are reported off.
    with warnings.catch_warnings(record=True) as rec2:
        warnings.simplefilter("default")
        g2 = create_optimized_local_generator(ckpt, quantization="none", enable_compilation=True,
                                              use_flash_attention=False, device="cpu", max_seq_length=2048,
                                              max_batch_size=1, enable_static_cache=False)
        opts2, cfg2 = g2.report()["optimizations"], g2._engine.llm.config
        g2.close()
    assert sum("enable_compilation=True" in m for m in _messages(rec2)) == 1
    assert not any("use_flash_attention" in m for m in _messages(rec2))
    assert opts2["continuous_batching"]["active"] is False and cfg2.max_num_seqs == 1
    assert opts2["kv_cache_reuse"]["active"] is False and cfg2.enable_prefix_caching is False


def test_unavailable_quantization_warns_and_runs_unquantized(ckpt, monkeypatch):
    monkeypatch.setattr(optimizations, "_quant_problem", lambda fmt, dev: "no int4 kernel in this test")
    with pytest.warns(UserWarning, match=r"quantization='4bit'.*no int4 kernel.*unquantized") as rec:
        g = create_optimized_local_generator(ckpt, quantization="4bit", use_flash_attention=False, device="cpu",
                                             max_new_tokens=3, max_seq_length=2048)
    try:
        assert len(rec) == 1
        q = g.report()["optimizations"]["quantization"]
        assert q["active"] is False and "no int4 kernel" in q["detail"]
        assert "quantization" not in g.report()["engine"]["load_report"]
        assert g.generate_batch(["def f():\n    return 1\n"])[0].ok
    finally:
        g.close()


def test_quantization_report_matches_the_engine(ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = create_optimized_local_generator(ckpt, quantization="8bit", enable_kv_cache_quantization=True,
                                             use_flash_attention=False, device="cpu", max_new_tokens=3,
                                             max_seq_length=2048)
    try:
        rep = g.report()
        load = rep["engine"]["load_report"]
        # 8-bit weights and an fp8 KV cache both run on the CPU: neither may be silently dropped.
        assert rep["optimizations"]["quantization"]["active"] is True
        assert load["quantization"]["format"] == "8bit" and load["quantization"]["quantized"]
        assert rep["optimizations"]["kv_cache_quantization"]["active"] is True
        assert load["kv_cache_dtype"] == "float8_e4m3fn"
        assert len(rep["warnings"]) == 1 and "Qwen2-family" in rep["warnings"][0]  # no degradation warning
        assert g.generate_batch(["def f():\n    return 1\n"])[0].ok
    finally:
        g.close()


def test_bad_arguments_raise_value_errors(ckpt):
    with pytest.raises(ValueError, match="quantization"):
        OptimizedLocalDocGenerator(ckpt, quantization="3bit", device="cpu")
    with pytest.raises(ValueError, match="max_batch_size"):
        OptimizedLocalDocGenerator(ckpt, max_batch_size=0, device="cpu")
    with pytest.raises(ValueError, match="max_batch_size"):
        OptimizedLocalDocGenerator(ckpt, device="cpu", max_num_seqs=3)


def test_close_and_async_with_stop_the_engine_thread(ckpt):
    async def use():
        async with create_optimized_local_generator(ckpt, quantization="none", use_flash_attention=False,
                                                    device="cpu", max_new_tokens=3, max_seq_length=2048) as g:
            r = await g.generate_async("def f():\n    return 1\n")
            assert g._engine.alive
        return g, r

    g, r = asyncio.run(use())
    assert r.ok
    assert not g._engine.alive
    with pytest.raises(RuntimeError, match="closed"):
        g.generate_batch(["def f():\n    return 1\n"])
    g.close()  # idempotent


def test_unusable_draft_model_falls_back_to_ngram_with_one_warning(ckpt):
    with pytest.warns(UserWarning, match=r"draft_model_id='/nonexistent/draft' could not be used.*n-gram") as rec:
        g = create_optimized_local_generator(ckpt, quantization="none", enable_speculative_decoding=True,
                                             draft_model_id="/nonexistent/draft", use_flash_attention=False,
                                             device="cpu", max_new_tokens=4, max_seq_length=2048)
    try:
        assert len(rec) == 1
        spec = g.report()["optimizations"]["speculative_decoding"]
        assert spec["active"] is True and "ngram" in spec["detail"]
        assert g._engine.llm.config.speculative.method == "ngram"
        assert g.generate_batch(["def f():\n    return 1\n"])[0].ok
    finally:
        g.close()


def test_a_missing_model_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        create_optimized_local_generator(str(tmp_path / "nope"), quantization="4bit", enable_compilation=True,
                                         device="cpu")


def test_a_chunk_limit_overrides_the_generator_limit_in_both_generators(ckpt, gen):
    """docgen retries a cut-off doc with a larger CodeChunk.max_new_tokens; 0 keeps the generator's."""
    from app.llm.local_client import create_local_generator

    code = "def add(a, b):\n    return a + b\n"
    default, short, long = gen.generate_batch([code, CodeChunk(code=code, max_new_tokens=3),
                                               CodeChunk(code=code, max_new_tokens=2 * MAX_NEW)])
    assert default.finish_reason == "length" and default.completion_tokens == MAX_NEW  # the tiny model never stops
    assert short.completion_tokens == 3 and short.extra["token_ids"] == default.extra["token_ids"][:3]
    assert long.completion_tokens == 2 * MAX_NEW and long.extra["token_ids"][:MAX_NEW] == default.extra["token_ids"]
    base = create_local_generator(ckpt, quantization="none", device="cpu", max_new_tokens=MAX_NEW, max_seq_length=2048)
    try:
        ref = base.generate_batch([CodeChunk(code=code, max_new_tokens=2 * MAX_NEW)])[0]
    finally:
        base.close()
    assert ref.extra["token_ids"] == long.extra["token_ids"]
