"""enable_compilation: compiled elementwise modules give the same greedy tokens as eager."""
from __future__ import annotations

from app.engine import LLM, SamplingParams

from .oracle import shared_prefix_prompts


def test_compiled_matches_eager(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny-qwen3"))
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=6)
    eager = LLM(path, block_size=4).generate(prompts, sp)
    llm = LLM(path, block_size=4, enable_compilation=True)
    rep = llm.load_report["compile"]
    assert rep["active"], rep["error"]
    assert rep["modules"] > 0
    assert [o.token_ids for o in llm.generate(prompts, sp)] == [o.token_ids for o in eager]
