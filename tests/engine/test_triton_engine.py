"""The Triton attention backend inside the engine against the torch_ref backend (eager), in the same
process. On the CPU (Triton interpreter): greedy tokens equal, through shared prefixes, chunked
prefill and the padded static-buffer decode step that CUDA graphs replay (run eagerly). On a GPU the
fast engine also captures and replays CUDA graphs (few buckets: max_num_seqs 4), fp32 must match
exactly, and bf16 is compared teacher-forced: the reference's next token given the fast path's own
prefix, over a few hundred positions."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.cuda_graphs import CudaGraphDecoder
from benchmarks.checks import teacher_forced_agreement

from app.engine.attention import triton_backend  # ours, imports no triton: an ImportError is a bug, not a skip

from .oracle import shared_prefix_prompts

pytestmark = pytest.mark.slow  # the Triton interpreter on the CPU; the full suite (CI, GPU) runs it

if not triton_backend.is_available():
    pytest.skip("triton is not importable here", allow_module_level=True)

SP = SamplingParams(max_tokens=5)
CUDA = torch.cuda.is_available()
# On a GPU: a small KV pool (two engines live at once) and few CUDA-graph buckets (capture time).
SMALL = dict(max_num_seqs=4, kv_cache_memory_gb=0.05) if CUDA else dict(max_num_seqs=4)


def _ref(path, **kw):
    return LLM(path, attention_backend="torch_ref", enforce_eager=True, dtype="float32", **SMALL, **kw)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=3)
    return path, prompts, [o.token_ids for o in _ref(path, block_size=4).generate(prompts, SP)]


@pytest.mark.parametrize("kwargs", [dict(block_size=4), dict(block_size=4, max_num_batched_tokens=7)],
                         ids=["shared-prefix", "chunked-prefill"])
def test_triton_backend_matches_torch_ref(reference, kwargs):
    path, prompts, ref = reference
    llm = LLM(path, attention_backend="triton", dtype="float32", **SMALL, **kwargs)
    assert llm.load_report.attention_backend == "triton"
    if CUDA:  # the fast path really is the graph path
        assert llm.load_report.cuda_graphs["active"] and llm.load_report.cuda_graphs["buckets"] == [1, 2, 4]
    assert [o.token_ids for o in llm.generate(prompts, SP)] == ref


def test_padded_static_decode_step_matches(reference):
    """The CUDA-graph decode path minus the capture: static buffers, bucket padding (3 -> 4 rows),
    fixed-width block tables, padded rows writing nothing."""
    path, prompts, ref = reference
    llm = LLM(path, attention_backend="triton", block_size=4, dtype="float32", enforce_eager=True, **SMALL)
    g = llm.runner.graphs = CudaGraphDecoder(llm.runner.model, llm.device, 4, llm.max_model_len, 4, capture=False)
    assert g.buckets == [1, 2, 4]
    calls = []
    run = g.run
    g.run = lambda *a: calls.append(len(a[0])) or run(*a)
    assert [o.token_ids for o in llm.generate(prompts, SP)] == ref
    assert calls and set(calls) == {3}  # every decode step went through the padded static path


@pytest.mark.skipif(not CUDA, reason="needs a GPU: bf16 Triton kernels in CUDA graphs")
def test_bf16_graphs_agree_with_torch_ref_teacher_forced(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=4)
    fast_llm = LLM(path, attention_backend="triton", dtype="bfloat16", block_size=16, **SMALL)
    assert fast_llm.load_report.cuda_graphs["active"]
    fast = [o.token_ids for o in fast_llm.generate(prompts, SamplingParams(max_tokens=64, ignore_eos=True))]
    ref_llm = LLM(path, attention_backend="torch_ref", enforce_eager=True, dtype="bfloat16", block_size=16, **SMALL)
    a = teacher_forced_agreement(ref_llm, prompts, fast)
    assert a["positions"] == 4 * 64 and a["errors"] == 0
    # bf16 kernels differ from torch_ref's by rounding only: a flipped argmax needs a near-tie
    assert a["fraction"] >= 0.97, a
