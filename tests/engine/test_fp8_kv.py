"""fp8 KV cache: scales fixed at load (calibration prompt or scales file), so a request's output
does not depend on which requests ran before it; the calibrated scales equal the largest |K| / |V|
a full-precision engine stores for the calibration prompt (with the margin)."""
from __future__ import annotations

import random

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.kv_cache_spec import CALIBRATION_MAX_TOKENS, CALIBRATION_PROMPT, FP8_E4M3_MAX, FP8_SCALE_MARGIN

FP8 = dict(kv_cache_dtype="fp8", block_size=4, kv_cache_memory_gb=0.002)
GREEDY_LP = SamplingParams(max_tokens=8, ignore_eos=True, logprobs=3)


@pytest.fixture(scope="module")
def path(tiny_checkpoint):
    return str(tiny_checkpoint("tiny-llama"))


def _prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 500) for _ in range(n)]


def test_output_does_not_depend_on_which_request_came_first(path):
    """The same greedy request, first on a fresh engine and after unrelated requests on another:
    identical tokens and log-probs (log-probs move with any change of scale, tokens rarely)."""
    x = _prompt(1, 12)
    first = LLM(path, **FP8).generate([x], GREEDY_LP)[0]
    later = LLM(path, **FP8)
    later.generate([_prompt(2, 40), _prompt(3, 7)], SamplingParams(max_tokens=4, ignore_eos=True))
    after = later.generate([x], GREEDY_LP)[0]
    assert after.token_ids == first.token_ids
    assert after.logprobs == first.logprobs


def test_calibrated_scales_match_a_full_precision_run_of_the_prompt(path):
    fp8 = LLM(path, **FP8)
    rep = fp8.load_report.kv_cache_scales
    assert rep["source"].startswith("calibration prompt")
    base = LLM(path, block_size=4, kv_cache_memory_gb=0.002)
    ids = base.tokenizer.encode(CALIBRATION_PROMPT)[:CALIBRATION_MAX_TOKENS]
    base.generate([ids], SamplingParams(max_tokens=1))
    n = len(ids)
    for i, (k, v) in enumerate(base.runner.kv_caches):  # one sequence: blocks 0.. in order
        want_k = k.flatten(0, 1)[:n].abs().max().item() * FP8_SCALE_MARGIN / FP8_E4M3_MAX
        want_v = v.flatten(0, 1)[:n].abs().max().item() * FP8_SCALE_MARGIN / FP8_E4M3_MAX
        assert rep["k"][i] == pytest.approx(want_k, rel=1e-6) and rep["v"][i] == pytest.approx(want_v, rel=1e-6)
        a = fp8.runner.attn_layers[i]
        assert (a.k_scale, a.v_scale) == (rep["k"][i], rep["v"][i])


def test_scales_file_round_trip_and_bad_files(path, tmp_path):
    a = LLM(path, **FP8)
    f = tmp_path / "scales.json"
    a.runner.kv_spec.scales.save(f)
    b = LLM(path, **FP8, kv_cache_scales=str(f))
    assert b.load_report.kv_cache_scales["source"] == str(f)
    assert b.runner.kv_spec.scales.k == a.runner.kv_spec.scales.k
    x = _prompt(4, 9)
    assert b.generate([x], GREEDY_LP)[0].logprobs == a.generate([x], GREEDY_LP)[0].logprobs
    # Scales from the file are the ones used: doubling them changes the stored keys.
    s = a.runner.kv_spec.scales
    type(s)(tuple(2 * k for k in s.k), s.v).save(f)
    c = LLM(path, **FP8, kv_cache_scales=str(f))
    assert [l.k_scale for l in c.runner.attn_layers] == [2 * k for k in s.k]
    type(s)(s.k[:1], s.v[:1]).save(f)
    with pytest.raises(ValueError, match="attention layers"):
        LLM(path, **FP8, kv_cache_scales=str(f))
    f.write_text("{}")
    with pytest.raises(ValueError, match="cannot read fp8 KV scales"):
        LLM(path, **FP8, kv_cache_scales=str(f))
    with pytest.raises(ValueError, match="kv_cache_dtype='fp8'"):
        LLM(path, kv_cache_scales=str(f))


def test_fp8_cache_without_scales_is_an_error(path):
    llm = LLM(path, block_size=4, kv_cache_memory_gb=0.002)
    with pytest.raises(RuntimeError, match="calibrated scales"):
        llm.runner.allocate_kv_cache(4, torch.float8_e4m3fn)
