"""Async scheduling (the overlapped step loop) through the real engine on the CPU: greedy outputs
with it on are token-identical to the plain loop's, through every way a batch changes under it.

On the CPU the forward is synchronous, so nothing overlaps in time, but the logic is the GPU's:
step N+1 is scheduled and launched before step N's tokens are applied, its placeholder inputs
are read from step N's sampled-token tensor, and tokens sampled for requests that step N ended
are dropped. (The plain loop is itself checked against transformers in test_engine_exact.)
"""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams

from .oracle import hf_greedy, run_staggered, shared_prefix_prompts

MAX_NEW = 10
KV_TOKENS = 4096  # 2 layers x 2 KV heads x 16 dims x 4 bytes x 2 (K,V) = 512 B per token


@pytest.fixture(scope="module")
def path(tiny_checkpoint):
    return tiny_checkpoint("tiny")


def engine(path, on: bool, kv_tokens: int = KV_TOKENS, **kw) -> LLM:
    llm = LLM(str(path), block_size=4, kv_cache_memory_gb=kv_tokens * 512 / 2**30, async_scheduling=on, **kw)
    assert llm.async_scheduling is on, llm.load_report.async_scheduling
    return llm


def summary(outs) -> list[tuple]:
    return [(o.token_ids, o.finish_reason, o.text, o.num_cached_tokens, o.error) for o in outs]


def both(path, run, **kw) -> tuple[list, list, LLM]:
    """Runs `run(llm)` with async scheduling off and on; returns both summaries and the async engine."""
    plain = summary(run(engine(path, False, **kw)))
    llm = engine(path, True, **kw)
    overlapped = summary(run(llm))
    # The last step of a batch is computed ahead and still in flight: one more step drops it
    # (and counts its tokens in discarded_tokens).
    assert not llm.has_unfinished() and llm.step() == [] and llm._inflight is None
    assert all(e is None for *_, e in plain), plain
    return plain, overlapped, llm


def test_default_is_off_on_the_cpu(path):
    llm = LLM(str(path), block_size=4, kv_cache_memory_gb=KV_TOKENS * 512 / 2**30)
    assert not llm.async_scheduling
    assert "CPU" in llm.load_report.async_scheduling["reason"]


def test_prefix_caching_matches_and_the_oracle(path):
    prompts = shared_prefix_prompts()
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW)))
    assert overlapped == plain
    assert [t for t, *_ in overlapped] == [hf_greedy(path, p, MAX_NEW) for p in prompts]
    assert [c for _, _, _, c, _ in overlapped][1:] == [20] * 4  # shared blocks are hit as in the plain loop
    assert llm.stats["discarded_tokens"] == 0  # only length stops: nothing computed past them


def test_requests_joining_mid_flight(path):
    prompts = shared_prefix_prompts(n=5, seed=3)
    plain, overlapped, llm = both(path, lambda llm: run_staggered(llm, prompts, SamplingParams(max_tokens=MAX_NEW)))
    assert overlapped == plain
    assert llm.stats["max_seqs_in_step"] > 1


def test_chunked_prefill(path):
    prompts = shared_prefix_prompts(seed=1)
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW)),
                                  max_num_batched_tokens=7)
    assert overlapped == plain
    assert llm.stats["steps"] > MAX_NEW + 10  # prompts really were cut into chunks


def test_preemption(path):
    prompts = shared_prefix_prompts(n=6)
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, SamplingParams(max_tokens=16)),
                                  kv_tokens=96)
    assert overlapped == plain
    assert llm.stats["preemptions"] > 0
    assert llm.stats["kv_free_blocks"] == llm.stats["kv_blocks"]


def test_max_model_len(path):
    """Requests that hit the model's length: the step after the last one is never scheduled."""
    prompts = [p[:24] for p in shared_prefix_prompts(n=4, seed=2)]
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, SamplingParams(max_tokens=50)),
                                  max_model_len=30)
    assert overlapped == plain
    assert {r for _, r, *_ in overlapped} == {"length"} and all(len(t) == 6 for t, *_ in overlapped)
    assert llm.stats["discarded_tokens"] == 0


def _free_run(path, prompts, n=12):
    return [o.token_ids for o in engine(path, False).generate(prompts, SamplingParams(max_tokens=n, ignore_eos=True))]


def test_stop_tokens_and_eos_drop_the_next_steps_token(path):
    """A request that step N ends was already scheduled in step N+1: that token is dropped."""
    prompts = shared_prefix_prompts(n=4, seed=5)
    free = _free_run(path, prompts)
    params = [SamplingParams(max_tokens=12, stop_token_ids=[f[2 + i]]) for i, f in enumerate(free)]
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, params))
    assert overlapped == plain
    for (toks, reason, *_), f, sp in zip(overlapped, free, params):
        cut = f.index(sp.stop_token_ids[0]) + 1
        assert reason == "stop" and toks == f[:cut]
    assert llm.stats["discarded_tokens"] >= len(prompts)  # one wasted token per early stop

    def eos_run(llm):  # the same stops through the EOS check (the tiny model never emits its own)
        llm.scheduler.eos_token_ids = {free[0][4]}
        return llm.generate(prompts, SamplingParams(max_tokens=12))

    plain, overlapped, _ = both(path, eos_run)
    assert overlapped == plain and overlapped[0][1] == "stop" and overlapped[0][0][-1] == free[0][4]


def test_stop_strings(path):
    prompts = shared_prefix_prompts(n=3, seed=6)
    llm = engine(path, False)
    texts = [o.text for o in llm.generate(prompts, SamplingParams(max_tokens=12, ignore_eos=True))]
    params = [SamplingParams(max_tokens=12, ignore_eos=True, stop=[t[4:7]]) for t in texts]
    plain, overlapped, llm = both(path, lambda llm: llm.generate(prompts, params))
    assert overlapped == plain
    assert all(r == "stop" for _, r, *_ in overlapped)
    assert all(text == t[: t.find(sp.stop[0])] for (_, _, text, *_), t, sp in zip(overlapped, texts, params))


def test_seeded_sampling_is_unchanged(path):
    prompts = shared_prefix_prompts(n=3, seed=7)
    params = [SamplingParams(max_tokens=8, temperature=1.0, top_k=40, seed=11 + i) for i in range(3)]
    plain, overlapped, _ = both(path, lambda llm: llm.generate(prompts, params))
    assert overlapped == plain


def test_abort_mid_flight(path):
    """Aborting a request whose step is on the device: its token is dropped, it is never
    reported, its blocks come back, and the others are unaffected."""
    prompts = shared_prefix_prompts(n=3, seed=8)

    def run(llm):
        ids = [llm.add_request(p, SamplingParams(max_tokens=MAX_NEW)) for p in prompts]
        results = {}
        for k in range(40):
            if k == 3:
                assert llm.abort(ids[1])
            for o in llm.step():
                results[o.request_id] = o
            if not llm.has_unfinished():
                break
        assert ids[1] not in results
        assert llm.stats["kv_free_blocks"] == llm.stats["kv_blocks"]
        return [results[ids[0]], results[ids[2]]]

    plain, overlapped, llm = both(path, run)
    assert overlapped == plain
    assert llm.stats["discarded_tokens"] == 1  # the aborted request's token from the step in flight


def test_blocks_of_a_step_in_flight_count_as_computed(path):
    """A request aborted while its prefill step is on the device leaves that prefill's blocks in
    the prefix cache, as the plain loop does (launched() marks them computed: any later step
    reads them after that one on the same stream)."""
    p = shared_prefix_prompts(n=1, prefix_len=24, seed=10)[0]

    def run(llm):
        rid = llm.add_request(p, SamplingParams(max_tokens=MAX_NEW))
        llm.step()
        llm.abort(rid)
        return llm.generate([p], SamplingParams(max_tokens=3))

    plain, overlapped, _ = both(path, run)
    assert overlapped == plain and overlapped[0][3] == 24


def test_failed_launch_fails_its_requests_after_the_previous_step_lands(path):
    prompts = shared_prefix_prompts(n=3, seed=9)

    def run(llm):
        execute, calls = llm.runner.execute, []

        def flaky(*a):
            calls.append(1)
            if len(calls) == 4:
                raise RuntimeError("injected")
            return execute(*a)

        llm.runner.execute = flaky
        outs = llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW))
        after = llm.generate(prompts[:1], SamplingParams(max_tokens=3))  # the engine still works
        return outs + after

    llm_plain, llm_async = engine(path, False), engine(path, True)
    plain, overlapped = summary(run(llm_plain)), summary(run(llm_async))
    assert overlapped == plain
    assert [r for _, r, *_ in overlapped] == ["error"] * 3 + ["length"]
    assert all(len(t) == 3 for t, *_ in overlapped[:3])  # the three steps before the failure count
    assert "injected" in overlapped[0][4]


def test_speculative_decoding_turns_it_off_and_says_why(path):
    llm = LLM(str(path), block_size=4, async_scheduling=True, speculative_method="ngram")
    assert not llm.async_scheduling
    assert "speculative" in llm.load_report.async_scheduling["reason"]
    prompts = shared_prefix_prompts(n=2)
    assert [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=MAX_NEW))] == \
        [hf_greedy(path, p, MAX_NEW) for p in prompts]


def test_padded_static_decode_step(path):
    """The CUDA-graph decode path minus the capture (Triton interpreter): the placeholder rows
    are filled in the graph's static input buffer."""
    from app.engine.attention import triton_backend  # ours, imports no triton: an ImportError is a bug

    if not triton_backend.is_available():
        pytest.skip("triton is not importable here")
    from app.engine.cuda_graphs import CudaGraphDecoder

    prompts = shared_prefix_prompts(n=3)
    calls = []

    def run(llm):
        g = llm.runner.graphs = CudaGraphDecoder(llm.runner.model, llm.device, 4, llm.max_model_len, 4, capture=False)
        real = g.run
        g.run = lambda *a: calls.append(len(a)) or real(*a)
        return llm.generate(prompts, SamplingParams(max_tokens=4))

    plain, overlapped, _ = both(path, run, attention_backend="triton", max_num_seqs=4)
    assert overlapped == plain
    assert 6 in calls and 5 in calls  # placeholder fills went through the static buffer


def test_decode_profile_script_dry_run(path, tmp_path):
    """benchmarks/decode_profile.py (the GPU trace + device-busy fraction) runs end to end on
    the CPU and writes its JSON and one Chrome trace per mode."""
    import json

    from benchmarks.decode_profile import main

    res = main(["--dry-run", "--model", str(path), "--batch", "4", "--prompt-len", "12", "--steps", "2",
                "--warmup", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "decode_profile.json").read_text())
    assert saved["modes"].keys() == {"async_off", "async_on"}
    for key, on in (("async_off", False), ("async_on", True)):
        m = saved["modes"][key]
        assert "error" not in m, m
        assert m["async_scheduling"] is on and m["batch"] == 4 and m["device_busy_fraction"] is None
        assert 0 < m["forward_fraction"] <= 1 and m["step_ms"] > 0
        assert json.loads(open(m["trace"]).read())["traceEvents"]
    assert res["dry_run"]


def test_fallback_runner_turns_it_off_and_says_why(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny-gpt2")), block_size=4, async_scheduling=True)
    assert llm.backend == "transformers-fallback" and not llm.async_scheduling
    assert "transformers-fallback" in llm.load_report.async_scheduling["reason"]


def test_config_rejects_a_non_boolean():
    from app.engine import EngineConfig

    with pytest.raises(ValueError, match="async_scheduling"):
        EngineConfig(model="x", async_scheduling="yes")


def test_one_host_read_per_step_after_the_next_launch(path, monkeypatch):
    """The overlapped step's only read of device values in the engine's own code is the previous
    step's tokens (PendingTokens.result), and it comes after the next step was launched. (On a
    GPU that read is the one sync; the attention backend is out of scope here: torch_ref, the CPU
    reference, reads a mask on the host by design; Triton does not.)"""
    import traceback

    import torch

    llm = engine(path, True)
    for p in shared_prefix_prompts(n=4):
        llm.add_request(p, SamplingParams(max_tokens=20))
    for _ in range(3):
        llm.step()  # prefill done; pure decode from here
    events = []

    def engine_caller() -> str | None:
        """The engine file that made the read (None: outside the engine, or in attention)."""
        for f in reversed(traceback.extract_stack()[:-2]):
            if "/app/engine/" in f.filename:
                return None if "/attention/" in f.filename else f.filename.rsplit("/", 1)[-1]
        return None

    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"):
        real = getattr(torch.Tensor, name)

        def probe(self, *a, _real=real, _name=name, **kw):
            who = engine_caller()
            if who is not None:
                events.append(f"read:{who}")
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, probe)
    execute = llm.runner.execute
    monkeypatch.setattr(llm.runner, "execute", lambda *a: events.append("launch") or execute(*a))
    for _ in range(3):
        events.append("step")
        llm.step()
    monkeypatch.undo()
    assert events == ["step", "launch", "read:inflight.py"] * 3
