"""KV-pool sizing from a (fake) GPU memory reading, and the joint target + draft plan."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine import engine_parts as setup_mod  # KV sizing lives in engine_parts (neutral module)
from app.engine.config import EngineConfig, SpeculativeConfig
from app.engine.memory_budget import (
    MemoryReading, checkpoint_weight_bytes, draft_footprint, plan_kv_blocks, usable_bytes,
)

GB = 1 << 30


def test_memory_cached_by_a_previous_engine_counts_as_free():
    # 80 GB card; a first engine freed its 60 GB pool but the caching allocator still holds it:
    # the driver reports 5 GB free. mem_get_info alone gives 5 - 8 = -3 GB (the old sizing raised).
    r = MemoryReading(free=5 * GB, total=80 * GB, reserved=62 * GB, allocated=2 * GB)
    assert usable_bytes(r, 0.9) == 72 * GB - (80 - 5 - 60) * GB  # 57 GB
    fresh = MemoryReading(free=78 * GB, total=80 * GB, reserved=0, allocated=0)
    assert usable_bytes(fresh, 0.9) == 70 * GB  # 72 GB share minus 2 GB the context and others use
    # live tensors of another engine still count as used: budget goes negative, not silently large
    busy = MemoryReading(free=6 * GB, total=80 * GB, reserved=70 * GB, allocated=70 * GB)
    assert usable_bytes(busy, 0.9) < 0


class _FakeRunner:
    dtype = torch.bfloat16

    def kv_bytes_per_block(self, kv_dtype):
        return 1 << 20  # 1 MiB


def test_cuda_sizing_uses_the_reading_after_emptying_the_cache(monkeypatch):
    reading = MemoryReading(free=5 * GB, total=80 * GB, reserved=62 * GB, allocated=2 * GB)
    monkeypatch.setattr(setup_mod, "read_cuda_memory", lambda device: reading)
    cfg = EngineConfig(model="unused")
    plan = setup_mod.plan_kv_pool(cfg, _FakeRunner(), torch.bfloat16, torch.device("cuda"), 4096)
    assert plan.num_blocks == 57 * 1024 and plan.draft_blocks == 0
    monkeypatch.setattr(setup_mod, "read_cuda_memory",
                        lambda device: MemoryReading(6 * GB, 80 * GB, 70 * GB, 70 * GB))
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        setup_mod.plan_kv_pool(cfg, _FakeRunner(), torch.bfloat16, torch.device("cuda"), 4096)


def test_joint_plan_splits_one_budget_between_target_and_draft():
    # 100 units: 20 for the draft's weights, then 80 / (4 + 1) = 16 blocks in each pool.
    p = plan_kv_blocks(100, 4, draft_block_bytes=1, draft_weight_bytes=20)
    assert (p.num_blocks, p.draft_blocks) == (16, 16)
    assert p.num_blocks * 4 + p.draft_blocks * 1 + 20 <= 100
    # the draft never needs more than its sequences can hold: the rest goes to the target
    p = plan_kv_blocks(100, 4, draft_block_bytes=1, draft_weight_bytes=20, draft_max_blocks=8)
    assert (p.num_blocks, p.draft_blocks) == (18, 8)
    assert plan_kv_blocks(100, 4).num_blocks == 25  # no draft: the whole budget
    assert plan_kv_blocks(10, 4, 1, draft_weight_bytes=20).num_blocks == 0  # weights alone do not fit


def test_draft_footprint_reads_the_checkpoint_without_loading_it(tiny_checkpoint):
    path = tiny_checkpoint("tiny")
    cfg = EngineConfig(model=str(path), block_size=4, max_num_seqs=3,
                       speculative=SpeculativeConfig(method="draft", draft_model=str(path), num_speculative_tokens=2))
    fp = draft_footprint(cfg, torch.float32, 30)
    llm = LLM(str(path), block_size=4, max_num_seqs=3)
    params = sum(p.numel() * p.element_size() for p in llm.runner.model.state_dict().values()
                 if p.dtype.is_floating_point and p.device.type != "meta")
    # the tiny model's state dict may hold buffers (rotary tables) the checkpoint does not: at most that much more
    assert fp.weight_bytes <= params and fp.weight_bytes == checkpoint_weight_bytes(sorted(path.glob("*.safetensors")),
                                                                                    torch.float32)
    assert fp.block_bytes == llm.runner.kv_bytes_per_block(torch.float32)
    assert fp.max_blocks == 3 * 8  # 3 sequences x ceil((30 + 2) / 4) blocks
    assert draft_footprint(EngineConfig(model=str(path)), torch.float32, 30) is None


def test_cuda_plan_with_a_draft_reserves_its_weights_and_pool(monkeypatch, tiny_checkpoint):
    path = tiny_checkpoint("tiny")
    cfg = EngineConfig(model=str(path), block_size=4, max_num_seqs=2, max_model_len=40,
                       speculative=SpeculativeConfig(method="draft", draft_model=str(path)))
    fp = draft_footprint(cfg, torch.bfloat16, 40)
    budget = fp.weight_bytes + 100 * (1 << 20) + 5 * fp.block_bytes
    monkeypatch.setattr(setup_mod, "usable_bytes", lambda r, u: budget)
    monkeypatch.setattr(setup_mod, "read_cuda_memory", lambda device: None)
    plan = setup_mod.plan_kv_pool(cfg, _FakeRunner(), torch.bfloat16, torch.device("cuda"), 40)
    assert plan.draft_blocks == fp.max_blocks == 2 * 11  # capped by what 2 sequences can hold
    assert plan.num_blocks * (1 << 20) + plan.draft_blocks * fp.block_bytes + fp.weight_bytes <= budget
    assert plan.num_blocks >= 99


def test_engine_hands_the_planned_pool_to_the_draft(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))
    llm = LLM(path, block_size=4, max_num_seqs=2, speculative_method="draft", speculative_draft_model=path,
              speculative_num_speculative_tokens=2)
    planned = llm.load_report.draft_kv_blocks
    assert planned == min(llm.num_kv_blocks, 2 * -(-(llm.max_model_len + 2) // 4))
    assert llm.spec.proposer.num_blocks == planned
    out = llm.generate([[5, 6, 7, 8, 9]], SamplingParams(max_tokens=4))
    assert len(out[0].token_ids) == 4
