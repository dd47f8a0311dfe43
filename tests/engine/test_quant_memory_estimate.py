"""The pre-load memory check budgets a quantized model as the streaming load builds it (issue 14
item 2), not as a full-precision model: a 4-bit model that fits is not refused."""
from __future__ import annotations

import pytest
import torch

from app.engine.config import EngineConfig
from app.engine.model_check import ModelLoadError
from app.engine.model_memory import check_fits, estimate_memory
from benchmarks.random_checkpoint import preset_config

CPU = torch.device("cpu")
MiB = 1 << 20


def _est(preset, **kw):
    cfg = EngineConfig(model="unused", kv_cache_memory_gb=1 / 1024, **kw)  # 1 MiB of KV
    return estimate_memory(cfg, preset_config(preset), CPU, torch.float32, None)


def test_quantized_load_is_budgeted_below_the_dense_one():
    dense = _est("cpu-31m").weights
    q8, q4 = (_est("cpu-31m", quantization=q, quant_lm_head="dense").weights for q in ("8bit", "4bit"))
    # cpu-31m: 117 MiB fp32; its measured peak load growth (LM head dense) is 73 MiB at 8 bits and
    # 59 MiB at 4 bits (BENCHMARKS.md, issue 14): the estimate stays above those, well below dense
    assert 73 * MiB <= q8 < 0.7 * dense and 59 * MiB <= q4 < q8
    assert _est("cpu-31m", quantization="4bit").weights < q4  # the default: LM head in 8 bits


@pytest.mark.parametrize("preset", ["tiny-qwen3", "cpu-31m"])  # tied, untied LM head
def test_lm_head_setting_changes_the_budget(preset):
    eight = _est(preset, quantization="8bit", quant_lm_head="8bit").weights
    dense = _est(preset, quantization="8bit", quant_lm_head="dense").weights
    assert eight < dense


def test_lora_quantizes_after_a_dense_load_so_it_is_budgeted_dense():
    assert _est("cpu-31m", quantization="4bit", lora_path="adapter").weights == _est("cpu-31m").weights


def test_a_quantized_model_that_fits_passes_where_the_dense_one_is_refused(monkeypatch):
    q4, dense = _est("cpu-31m", quantization="4bit"), _est("cpu-31m")
    monkeypatch.setattr("app.engine.model_memory.available_bytes", lambda device: (q4.total + dense.total) // 2)
    check_fits(q4, CPU, "cpu-31m")
    with pytest.raises(ModelLoadError, match="needs about"):
        check_fits(dense, CPU, "cpu-31m")


def test_unknown_tied_embedding_setting_is_refused():
    with pytest.raises(ValueError, match="quant_lm_head"):
        EngineConfig(model="x", quant_lm_head="4bit")
