"""The fused CPU decode step (models/fused_decode.py + cpu_decode_step.c) against its reference, the
lean forward (itself bit-identical to the module path: test_lean_forward.py).

Every step the fused path runs is also run through the lean forward on the same inputs (the K/V
both write at the step's slots are the same values up to rounding) and the final hidden states
compared: float32 models to 1e-5 relative (sums in another order, a polynomial exp), quantized ones
to QUANT_TOL (an activation's int8 rounding flips where its input differs by an ulp). The fused
step runs 8-bit layers on the VNNI kernel at every batch size, the lean forward at one row only:
the 8-bit test puts the lean forward on it at every size too, so only the step's own error shows.
Greedy tokens: equal to the lean engine's end to end for float32; for quantized models the
teacher-forced argmax must agree wherever the reference's top-2 gap exceeds the logit error seen.
"""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.attention import torch_cpu
from app.engine.attention.metadata import AttentionMetadata
from app.engine.models import fused_decode
from app.engine.quant import vnni

from .oracle import run_staggered, shared_prefix_prompts

pytestmark = pytest.mark.skipif(not vnni.available(), reason=f"our CPU kernels cannot run here: {vnni.problem()}")

F32_TOL = 1e-5
# Measured (torch 2.13): <= 1e-5 on these tiny models; 0.008 on the 31M shape over 78 steps, where
# more int8 roundings sit near a tie. A wrong rotary sign or a dropped bias gives O(1).
QUANT_TOL = 0.02
BF16_TOL = 0.06  # measured 0.02-0.03 on these tiny models (torch 2.13)


def _engine(path, quant=None, **kw):
    kw = {"dtype": "float32", "quant_cache_dir": "", "block_size": 4, "max_num_seqs": 4, **kw}
    return LLM(str(path), quantization=quant, **kw)


def _checked(llm) -> list[dict]:
    """Run every step the fused path takes through the lean forward first; record per fused step
    the relative hidden-state difference, the logit difference and whether the argmax agrees
    (or the reference's top-2 gap is within the logit difference: a tie either way)."""
    lean = llm.runner.lean
    fused, forward, seen = lean.fused, lean.forward, []

    def both(ids, pos, meta):
        if not fused.applies(meta, ids.shape[0]):
            return forward(ids, pos, meta)
        lean.fused = None
        try:
            ref = forward(ids, pos, meta)
        finally:
            lean.fused = fused
        out = forward(ids, pos, meta)
        lr, lo = lean.compute_logits(ref), lean.compute_logits(out)
        err = (lo - lr).abs().max().item()
        top2 = lr.topk(2, -1).values
        tie = (top2[:, 0] - top2[:, 1]) <= 2 * err
        seen.append({"rel": ((out - ref).abs().max() / ref.abs().max()).item(), "rows": ids.shape[0],
                     "argmax": bool(((lo.argmax(-1) == lr.argmax(-1)) | tie).all())})
        return out

    lean.forward = both
    return seen


@pytest.mark.parametrize("preset", ["tiny", pytest.param("tiny-qwen3", marks=pytest.mark.slow),
                                    pytest.param("tiny-llama", marks=pytest.mark.slow)])
def test_float32_fused_steps_match_the_lean_forward(tiny_checkpoint, preset):
    """Qwen2 (qkv bias), Qwen3 (QK-norm, head_dim 32), Llama: batches joining and leaving."""
    path = tiny_checkpoint(preset)
    prompts = shared_prefix_prompts(n=5, seed=3)
    params = SamplingParams(max_tokens=9, ignore_eos=True)
    want = [o.token_ids for o in run_staggered(_engine(path, cpu_fused_decode=False), prompts, params)]
    llm = _engine(path)
    assert llm.load_report["fused_decode"] == "on"
    seen = _checked(llm)
    before = fused_decode.counters["steps"]
    got = [o.token_ids for o in run_staggered(llm, prompts, params)]
    assert fused_decode.counters["steps"] - before == len(seen) > 0
    assert {s["rows"] for s in seen} >= {1, 4}
    assert max(s["rel"] for s in seen) < F32_TOL
    assert all(s["argmax"] for s in seen)
    assert got == want


@pytest.mark.parametrize("preset,quant", [("tiny", "4bit"), pytest.param("tiny-untied", "8bit", marks=pytest.mark.slow),
                                          pytest.param("tiny-qwen3", "4bit", marks=pytest.mark.slow)])
def test_quantized_fused_steps_stay_close_to_the_lean_forward(tiny_checkpoint, preset, quant):
    path = tiny_checkpoint(preset)
    llm = _engine(path, quant)
    assert llm.load_report["fused_decode"] == "on"
    assert llm.runner.model.model.layers[0].self_attn.attn.k_cache.dtype == torch.bfloat16  # bf16 pool read
    for m in llm.runner.model.modules():  # the lean forward's 8-bit layers on the VNNI kernel at every M
        if type(m).__name__ == "Int8Linear":  # too, so only the fused step's own differences remain
            m.vnni_max_m = vnni.ANY_M
    seen = _checked(llm)
    run_staggered(llm, shared_prefix_prompts(n=5, seed=4), SamplingParams(max_tokens=9, ignore_eos=True))
    assert seen and max(s["rel"] for s in seen) < QUANT_TOL
    assert all(s["argmax"] for s in seen)


def test_larger_batches_and_other_steps_take_the_lean_forward(tiny_checkpoint, monkeypatch):
    """Past MAX_BATCH rows, and for prefill or mixed steps, the lean forward runs; switching the
    fused step off mid-run leaves the lean forward's dense KV copies correct (they are rebuilt:
    the fused steps never wrote them)."""
    path = tiny_checkpoint("tiny")
    prompts = shared_prefix_prompts(n=4, seed=6)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    want = [o.token_ids for o in _engine(path, cpu_fused_decode=False).generate(prompts, params)]
    monkeypatch.setattr(fused_decode, "MAX_BATCH", 2)
    llm = _engine(path)
    seen = _checked(llm)
    ids = {llm.add_request(p, params): i for i, p in enumerate(prompts[:2])}
    res = {}
    for _ in range(5):  # prefill, then fused decode steps of 2 rows
        res.update({ids[o.request_id]: o.token_ids for o in llm.step()})
    fused_steps = len(seen)
    assert fused_steps >= 3 and all(s["rows"] == 2 for s in seen)
    ids.update({llm.add_request(p, params): i + 2 for i, p in enumerate(prompts[2:])})
    for _ in range(4):  # 4 rows: over MAX_BATCH, the lean forward
        res.update({ids[o.request_id]: o.token_ids for o in llm.step()})
    assert len(seen) == fused_steps
    llm.runner.use_fused_decode(False)
    before = torch_cpu.counters["rebuilds"]
    while llm.has_unfinished():
        res.update({ids[o.request_id]: o.token_ids for o in llm.step()})
    assert torch_cpu.counters["rebuilds"] > before
    assert [res[i] for i in range(4)] == want


@pytest.mark.parametrize("preset", ["tiny", pytest.param("tiny-qwen3", marks=pytest.mark.slow)])
def test_bf16_fused_steps_stay_close_to_the_lean_forward(tiny_checkpoint, preset):
    """A bf16 model: bf16 weights through vdpbf16ps, the residual stream float32 inside the step
    where the lean forward rounds every intermediate to bf16 (~0.4% each): BF16_TOL."""
    llm = _engine(tiny_checkpoint(preset), dtype="bfloat16")
    assert llm.load_report["fused_decode"] == "on"
    seen = _checked(llm)
    run_staggered(llm, shared_prefix_prompts(n=5, seed=4), SamplingParams(max_tokens=9, ignore_eos=True))
    assert seen and max(s["rel"] for s in seen) < BF16_TOL
    assert all(s["argmax"] for s in seen)


def test_where_it_is_off_the_report_says_why(tiny_checkpoint):
    path = tiny_checkpoint("tiny")
    assert _engine(path, cpu_fused_decode=False).load_report["fused_decode"] == "off (cpu_fused_decode=False)"
    assert _engine(path, "4bit", cpu_kernels="torch").load_report["fused_decode"] == "off (cpu_kernels='torch')"
    fp16 = _engine(path, dtype="float16").load_report["fused_decode"]
    assert fp16.startswith("off (activations in torch.float16")
    assert _engine(path, cpu_lean_forward=False).load_report["fused_decode"] == "off (no lean forward)"


def test_inputs_the_kernel_refuses_raise(tiny_checkpoint):
    """A position past the rotary table: a clear error, not a read out of bounds."""
    llm = _engine(tiny_checkpoint("tiny"))
    fused = llm.runner.lean.fused
    llm.generate([[5, 6, 7]], SamplingParams(max_tokens=2, ignore_eos=True))  # binds the pools
    m = AttentionMetadata(slot_mapping=torch.tensor([9]), query_start_loc=torch.tensor([0, 1], dtype=torch.int32),
                          seq_lens=torch.tensor([10], dtype=torch.int32), block_tables=torch.tensor([[0, 1, 2]], dtype=torch.int32),
                          query_lens_cpu=[1], seq_lens_cpu=[10], max_query_len=1, max_seq_len=10)
    assert fused.applies(m, 1)
    h = torch.zeros(1, llm.runner.model.spec.hidden_size)
    with pytest.raises(RuntimeError, match="refused"):
        fused.run(h, torch.tensor([fused.spec.max_pos]), m)
    fused.run(h, torch.tensor([9]), m)  # the same step at a valid position runs
    assert torch.isfinite(h).all()


def test_same_bits_at_one_and_two_threads(tiny_checkpoint):
    """Every output of the step is computed whole by one thread (rows of a weight, a (row, kv head)
    of attention, a row of the per-row pieces): the thread count does not change a bit."""
    llm = _engine(tiny_checkpoint("tiny"), "4bit")
    fused, lean = llm.runner.lean.fused, llm.runner.lean
    forward, outs = lean.forward, []

    def twice(ids, pos, meta):
        if not fused.applies(meta, ids.shape[0]):
            return forward(ids, pos, meta)
        threads = torch.get_num_threads()
        try:
            got = []
            for n in (1, 2):
                torch.set_num_threads(n)
                got.append(forward(ids, pos, meta))
        finally:
            torch.set_num_threads(threads)
        outs.append(torch.equal(*got))
        return got[-1]

    lean.forward = twice
    run_staggered(llm, shared_prefix_prompts(n=3, seed=8), SamplingParams(max_tokens=6, ignore_eos=True))
    assert outs and all(outs)


ENGINE_CASES = {
    "chunked": dict(max_num_batched_tokens=7),  # prefill chunks mixed with decode rows
    "preempt": dict(kv_cache_memory_gb=96 * 512 / 2**30),  # sequences preempted and recomputed
    "ngram": dict(speculative_method="ngram", speculative_max_batch_size=8),  # verification steps
    "fp8-kv": dict(kv_cache_dtype="fp8"),  # a pool the fused step does not take: the lean forward
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c != "preempt" else c
                                  for c in ENGINE_CASES])
def test_engine_events_with_the_fused_step(tiny_checkpoint, case):
    """Through the engine's events (chunked prefill, preemption, speculative verification, an fp8
    pool) the fused engine's greedy tokens equal the lean engine's (float32: within 1e-5 above)."""
    path = tiny_checkpoint("tiny")
    kw = {"block_size": 4, **ENGINE_CASES[case]}
    prompts = shared_prefix_prompts(n=6, seed=11)
    params = [SamplingParams(max_tokens=6 + 3 * i, ignore_eos=True) for i in range(len(prompts))]
    want = [o.token_ids for o in _engine(path, cpu_fused_decode=False, **kw).generate(prompts, params)]
    llm = _engine(path, **kw)
    before = fused_decode.counters["steps"]
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    ran = fused_decode.counters["steps"] - before
    assert ran == 0 if case == "fp8-kv" else ran > 0
    if case == "preempt":
        assert llm.stats["preemptions"] > 0
