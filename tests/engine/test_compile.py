"""enable_compilation: compiled elementwise modules give the same greedy tokens as eager."""
from __future__ import annotations

import pytest

from app.engine import LLM, SamplingParams

from .oracle import shared_prefix_prompts


@pytest.mark.slow
def test_compiled_matches_eager(tiny_checkpoint):
    from torch._dynamo.utils import counters

    path = str(tiny_checkpoint("tiny-qwen3"))
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=6)
    eager = LLM(path, block_size=4).generate(prompts, sp)
    graphs_before = counters["stats"]["unique_graphs"]
    llm = LLM(path, block_size=4, enable_compilation=True)
    rep = llm.load_report.compile
    assert rep.active, rep.error
    assert rep.modules > 0
    assert [o.token_ids for o in llm.generate(prompts, sp)] == [o.token_ids for o in eager]
    # Graphs per compiled function (norm on 2-D and, for QK-norm, 3-D inputs; activation; rotary)
    # shared by all layers: per module instance this model would need 9 norm graphs alone, and a
    # real model would hit dynamo's recompile limit and leave its later layers eager.
    assert counters["stats"]["unique_graphs"] - graphs_before <= 4
