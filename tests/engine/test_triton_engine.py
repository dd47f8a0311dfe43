"""The Triton attention backend inside the engine (Triton interpreter on the CPU): greedy tokens
equal the torch reference backend's, through shared prefixes, chunked prefill and the padded
static-buffer decode step that CUDA graphs replay (run eagerly here: no capture on the CPU)."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams
from app.engine.cuda_graphs import CudaGraphDecoder

from app.engine.attention import triton_backend  # ours, imports no triton: an ImportError is a bug, not a skip

from .oracle import shared_prefix_prompts

pytestmark = pytest.mark.slow  # the Triton interpreter on the CPU; the full suite (CI, GPU) runs it

if not triton_backend.is_available():
    pytest.skip("triton is not importable here", allow_module_level=True)

SP = SamplingParams(max_tokens=5)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    prompts = shared_prefix_prompts(n=3)
    return path, prompts, [o.token_ids for o in LLM(path, block_size=4).generate(prompts, SP)]


@pytest.mark.parametrize("kwargs", [dict(block_size=4), dict(block_size=4, max_num_batched_tokens=7)],
                         ids=["shared-prefix", "chunked-prefill"])
def test_triton_backend_matches_torch_ref(reference, kwargs):
    path, prompts, ref = reference
    llm = LLM(path, attention_backend="triton", **kwargs)
    assert llm.load_report["attention_backend"] == "triton"
    assert [o.token_ids for o in llm.generate(prompts, SP)] == ref


def test_padded_static_decode_step_matches(reference):
    """The CUDA-graph decode path minus the capture: static buffers, bucket padding (3 -> 4 rows),
    fixed-width block tables, padded rows writing nothing."""
    path, prompts, ref = reference
    llm = LLM(path, attention_backend="triton", block_size=4, max_num_seqs=4)
    g = llm.runner.graphs = CudaGraphDecoder(llm.runner.model, llm.device, 4, llm.max_model_len, 4, capture=False)
    assert g.buckets == [1, 2, 4]
    calls = []
    run = g.run
    g.run = lambda *a: calls.append(len(a[0])) or run(*a)
    assert [o.token_ids for o in llm.generate(prompts, SP)] == ref
    assert calls and set(calls) == {3}  # every decode step went through the padded static path
