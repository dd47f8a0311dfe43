"""CPU KV pool: sized to the work (max_num_seqs x max_model_len), capped by a budget, and bf16 on
CPUs with native bf16 when the weights are quantized (fp32 otherwise)."""
from __future__ import annotations

import torch

from app.engine import LLM, SamplingParams
from app.engine import cpu_kv as S
from app.engine.config import EngineConfig


def test_kv_dtype_policy():
    native = S.cpu_has_native_bf16()
    assert S.cpu_kv_dtype(torch.float32, quantized=True) == (torch.bfloat16 if native else torch.float32)
    assert S.cpu_kv_dtype(torch.float32, quantized=False) == torch.float32  # the exact engine stays exact


def test_budget_is_the_work_capped_by_memory(monkeypatch):
    cfg = EngineConfig(model="x", max_num_seqs=3, block_size=4)
    per_block = 1000
    assert S.cpu_kv_budget(cfg, per_block, 64) == 3 * 64 // 4 * per_block + per_block
    monkeypatch.setattr(S.memory, "available", lambda: 40_000)  # a quarter: 10 blocks
    assert S.cpu_kv_budget(cfg, per_block, 64) == 10_000
    monkeypatch.setattr(S, "CPU_KV_CAP_BYTES", 5_000)
    assert S.cpu_kv_budget(cfg, per_block, 64) == 5_000


def test_quantized_engine_pool_fits_the_work(tiny_checkpoint):
    llm = LLM(str(tiny_checkpoint("tiny")), quantization="8bit", quant_cache_dir="", max_num_seqs=2,
              max_model_len=64, block_size=4)
    r = llm.load_report
    assert r.kv_tokens == 2 * 64 + 4  # the work plus one block, not a fixed reservation
    want = "bfloat16" if S.cpu_has_native_bf16() else "float32"
    assert r.kv_cache_dtype == want and llm.runner.kv_caches[0][0].dtype == getattr(torch, want)
    outs = llm.generate(["def f(x):", "class A:"], SamplingParams(max_tokens=5, ignore_eos=True))
    assert all(len(o.token_ids) == 5 and o.error is None for o in outs)
