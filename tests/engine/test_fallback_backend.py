"""The transformers fallback backend: architectures without a native model run through
transformers behind the same LLM API and scheduler, and match transformers `generate` token for
token, across the settings that cut the work up (chunked prefill, preemption, requests joining
mid-flight, n-gram speculation)."""
from __future__ import annotations

import warnings

import pytest

from app.engine import LLM, SamplingParams
from app.engine.load_report import LoadReport

from .oracle import hf_greedy, run_staggered, shared_prefix_prompts
from .quant_reference import dequantized_twin, fp32_kernels

MAX_NEW = 10


def load(path, **kw) -> tuple[LLM, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llm = LLM(str(path), block_size=4, **kw)
    return llm, [str(w.message) for w in caught if "transformers fallback" in str(w.message)]


def check(path, llm, prompts, max_new=MAX_NEW):
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_new))
    for p, o in zip(prompts, outs):
        assert o.error is None, o.error
        assert o.token_ids == hf_greedy(path, p, max_new), f"prompt of {len(p)} tokens diverged"
    return outs


@pytest.mark.parametrize("preset,arch", [("tiny-phi3", "Phi3ForCausalLM"),
                                         pytest.param("tiny-gpt2", "GPT2LMHeadModel", marks=pytest.mark.slow)])
def test_fallback_matches_transformers_and_says_what_runs(tiny_checkpoint, preset, arch):
    path = tiny_checkpoint(preset)
    llm, warned = load(path)
    assert llm.backend == "transformers-fallback"
    assert len(warned) == 1 and arch in warned[0] and "paged KV" in warned[0]
    rep = llm.load_report
    assert isinstance(rep, LoadReport) and rep.backend == "transformers-fallback" and rep.extra["architecture"] == arch
    assert rep["backend"] == "transformers-fallback" and rep["architecture"] == arch
    assert {"paged_kv", "prefix_caching", "triton_attention", "cuda_graphs", "fp8_kv_cache"} <= set(rep["unavailable"])
    # Prefix caching does not apply (no paged KV): the shared 21-token prefix is never reused. The
    # runner says so in its capabilities; the caller's config is left as given.
    assert llm.prefix_caching is False and llm.block_manager.enable_prefix_caching is False
    assert llm.config.enable_prefix_caching is True
    outs = check(path, llm, shared_prefix_prompts())
    assert [o.num_cached_tokens for o in outs] == [0] * 5
    assert llm.stats["max_seqs_in_step"] == 5  # the whole batch ran together
    assert llm.runner.batched_decodes > 0  # decode steps ran as one stacked forward


def test_native_architecture_reports_native(tiny_checkpoint):
    llm, warned = load(tiny_checkpoint("tiny-llama"))
    assert llm.backend == "native" and llm.load_report.backend == "native" and not warned


@pytest.mark.slow
def test_chunked_prefill_and_preemption(tiny_checkpoint):
    """A 7-token budget cuts prompts into chunks (Gemma 2's sliding window of 8 is crossed inside
    chunks); a 96-token KV budget forces preemption, i.e. dropping a dense cache and recomputing."""
    path = tiny_checkpoint("tiny-gemma2")
    llm, _ = load(path, max_num_batched_tokens=7, kv_cache_memory_gb=80 * llm_kv_bytes_per_token(path) / 2**30)
    check(path, llm, shared_prefix_prompts(n=4), max_new=12)
    assert llm.stats["preemptions"] > 0
    assert llm.stats["steps"] > 12 + 10
    assert len(llm.runner.states) <= 4  # caches of finished sequences are dropped


def llm_kv_bytes_per_token(path) -> int:
    import json

    c = json.loads((path / "config.json").read_text())
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * head_dim * 4  # fp32


@pytest.mark.slow
@pytest.mark.parametrize("batch_decode", [True, False])
def test_requests_joining_mid_flight(tiny_checkpoint, batch_decode):
    """Continuous batching; the stacked decode (True) and one forward per sequence (False, the
    reference) both match the oracle."""
    path = tiny_checkpoint("tiny-gpt2")
    llm, _ = load(path, max_num_seqs=3)
    llm.runner.batch_decode = batch_decode
    prompts = shared_prefix_prompts(n=6, seed=3)
    results = run_staggered(llm, prompts, SamplingParams(max_tokens=MAX_NEW))
    for i, p in enumerate(prompts):
        assert results[i].token_ids == hf_greedy(path, p, MAX_NEW)
    assert llm.stats["max_seqs_in_step"] == 3
    assert (llm.runner.batched_decodes > 0) == batch_decode


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny-phi3", "tiny-gemma2"])
def test_ngram_speculation_is_lossless_on_the_fallback(tiny_checkpoint, preset):
    """Rejected proposals are cropped off the dense cache (Gemma 2's sliding-window layers, past
    their window, cannot be cropped: the cache is rebuilt); output stays the greedy output."""
    path = tiny_checkpoint(preset)
    llm, _ = load(path, speculative_method="ngram", speculative_num_speculative_tokens=3,
                  speculative_ngram_min=1, speculative_max_batch_size=8)
    # p + (greedy continuation of p) + p: the n-gram proposer finds material to propose.
    prompts = []
    for p in shared_prefix_prompts(n=2, prefix_len=6, seed=5):
        prompts.append(p + hf_greedy(path, p, 8) + p)
    check(path, llm, prompts, max_new=12)
    st = llm.stats
    assert st["spec_accepted_tokens"] < st["spec_proposed_tokens"]  # some proposals were rejected
    if preset == "tiny-phi3":
        assert llm.runner.recomputes == 0  # rejections were cropped off, not recomputed
    else:
        assert llm.runner.recomputes > 0  # a sliding-window cache past its window was rebuilt


def test_draft_speculation_is_refused_with_a_clear_error(tiny_checkpoint):
    with pytest.raises(ValueError, match="fallback backend.*ngram"):
        load(tiny_checkpoint("tiny-phi3"), speculative_method="draft",
             speculative_draft_model=str(tiny_checkpoint("tiny")))


def test_quantization_swaps_the_transformers_linears(tiny_checkpoint, monkeypatch):
    """Kernels in float32: the quantized fallback engine generates exactly what the dense fallback
    engine holding its dequantized weights generates."""
    from app.engine.quant.int8 import Int8Linear

    fp32_kernels(monkeypatch)
    path = tiny_checkpoint("tiny-phi3")
    llm, _ = load(path, quantization="8bit")
    q = llm.load_report.quantization
    # the layers, and on the CPU the untied LM head in 8 bits (EngineConfig.quant_lm_head)
    assert q.quantized and all(".self_attn." in n or ".mlp." in n or n.endswith("lm_head") for n in q.quantized)
    assert sum(isinstance(m, Int8Linear) for m in llm.runner.model.modules()) == len(q.quantized)
    prompts, sp = shared_prefix_prompts(n=2), SamplingParams(max_tokens=8, ignore_eos=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warning, already checked above
        ref = dequantized_twin(path, llm, block_size=4)
    assert [o.token_ids for o in llm.generate(prompts, sp)] == [o.token_ids for o in ref.generate(prompts, sp)]


def test_quantization_with_nothing_to_quantize_says_so(tiny_checkpoint):
    llm, warned = load(tiny_checkpoint("tiny-gpt2"), quantization="8bit")  # GPT-2: Conv1D, tied head
    assert llm.load_report.quantization.quantized == []
    assert "no plain nn.Linear" in warned[0]
