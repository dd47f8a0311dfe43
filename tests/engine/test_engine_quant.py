"""Quantization inside the engine: every CPU format on every native architecture end to end, the
on-disk cache of quantized weights, and the fp8 KV cache."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams

from .oracle import shared_prefix_prompts
from .quant_reference import dequantized_twin, fp32_kernels, teacher_forced_agreement

NATIVE = ["tiny", "tiny-llama", "tiny-mistral", "tiny-qwen3"]
# Relative Frobenius error of the dequantized weights against the checkpoint's (measured on the tiny
# random checkpoints: int8 ~0.005, int4 round-to-nearest in groups ~0.08): a broken quantizer is far off.
MAX_WEIGHT_ERROR = {"8bit": 0.02, "4bit": 0.15}
PROMPTS = shared_prefix_prompts(n=3)
GREEDY = SamplingParams(max_tokens=8, ignore_eos=True)


def _weight_errors(path, llm) -> dict[str, float]:
    dense = LLM(str(path), block_size=4).runner.model
    errs = {}
    for name in llm.load_report.quantization.quantized:
        w = dense.get_submodule(name).weight.float()
        deq = llm.runner.model.get_submodule(name).dequantize_weight(torch.float32)
        errs[name] = float((deq - w).detach().norm() / w.detach().norm())
    return errs


@pytest.mark.parametrize("preset", [pytest.param(p, marks=[] if p == "tiny" else pytest.mark.slow) for p in NATIVE])
@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_quantized_engine_equals_dense_engine_with_dequantized_weights(tiny_checkpoint, preset, fmt, tmp_path,
                                                                       monkeypatch):
    """Kernels in float32: the quantized engine computes exactly what a dense engine holding its
    dequantized weights computes, token for token; and those weights are close to the checkpoint's."""
    fp32_kernels(monkeypatch)
    path = tiny_checkpoint(preset)
    llm = LLM(str(path), quantization=fmt, quant_cache_dir=str(tmp_path), block_size=4)
    rep = llm.load_report.quantization
    assert rep.format == fmt and rep.quantized and rep.bytes_after < rep.bytes_before
    errs = _weight_errors(path, llm)
    assert max(errs.values()) < MAX_WEIGHT_ERROR[fmt], errs
    ref = dequantized_twin(path, llm, block_size=4)
    got = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    assert got == [o.token_ids for o in ref.generate(PROMPTS, GREEDY)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_default_bf16_kernels_agree_with_the_dequantized_reference(tiny_checkpoint, fmt):
    """The default CPU kernels take bfloat16 activations: teacher-forced next-token agreement with
    the dense fp32 engine holding the same dequantized weights (measured 0.95-0.98)."""
    path = tiny_checkpoint("tiny")
    llm = LLM(str(path), quantization=fmt, quant_cache_dir="", block_size=4)
    sp = SamplingParams(max_tokens=16, ignore_eos=True)
    prompts = shared_prefix_prompts(n=4)
    outs = [o.token_ids for o in llm.generate(prompts, sp)]
    assert teacher_forced_agreement(dequantized_twin(path, llm, block_size=4), prompts, outs) >= 0.85


def test_quantized_weights_cached_on_disk_and_invalidated(tiny_checkpoint, tmp_path):
    a = tiny_checkpoint("tiny")
    b = tiny_checkpoint("tiny", seed=1)
    first = LLM(str(a), quantization="4bit", quant_cache_dir=str(tmp_path))
    again = LLM(str(a), quantization="4bit", quant_cache_dir=str(tmp_path))
    other = LLM(str(b), quantization="4bit", quant_cache_dir=str(tmp_path))
    assert first.load_report.quantization.cache == "miss"
    assert again.load_report.quantization.cache == "hit"
    assert other.load_report.quantization.cache == "miss"  # another checkpoint, another key
    p = shared_prefix_prompts(n=2)
    sp = SamplingParams(max_tokens=8, ignore_eos=True)
    assert [o.token_ids for o in first.generate(p, sp)] == [o.token_ids for o in again.generate(p, sp)]


def test_fp8_weights_refused_clearly_on_cpu(tiny_checkpoint):
    with pytest.raises(ValueError, match="fp8"):
        LLM(str(tiny_checkpoint("tiny")), quantization="fp8", device="cpu", quant_cache_dir="")


def test_fp8_kv_cache_runs_and_holds_more_tokens(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny-llama"))
    base = LLM(path, kv_cache_memory_gb=0.001, block_size=4)
    fp8 = LLM(path, kv_cache_dtype="fp8", kv_cache_memory_gb=0.001, block_size=4)
    assert fp8.runner.kv_caches[0][0].dtype == torch.float8_e4m3fn
    elem = torch.empty(0, dtype=base.dtype).element_size()
    assert fp8.load_report.kv_tokens >= base.load_report.kv_tokens * elem - 4
    prompt = shared_prefix_prompts(n=1)[0]
    sp = SamplingParams(max_tokens=1)
    base.generate([prompt], sp)
    fp8.generate([prompt], sp)
    # Layer 0's keys depend only on the embeddings, so both engines computed the same values; the
    # fp8 cache holds them within e4m3's rounding (3 mantissa bits: relative error <= 1/16) plus
    # the smallest step at the scale in use.
    a = fp8.runner.attn_layers[0]
    assert a.k_scale is not None and a.k_scale > 0
    n = len(prompt)
    ref = base.runner.kv_caches[0][0].flatten(0, 1)[:n].float()
    got = fp8.runner.kv_caches[0][0].flatten(0, 1)[:n].float() * a.k_scale
    tol = ref.abs() / 16 + a.k_scale * 2**-9
    assert (got - ref).abs().le(tol).all()
    outs = fp8.generate(shared_prefix_prompts(n=3), SamplingParams(max_tokens=8, ignore_eos=True))
    assert all(len(o.token_ids) == 8 for o in outs)
