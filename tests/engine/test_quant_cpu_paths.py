"""The CPU decode-speed paths of the quantized layers against their references (issue 14 item 3):
the blocked dense path (prefill) and the kept kernel dtype (fewer conversions)."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.quant import Int4Linear, Int8Linear
from app.engine.quant import dense_blocks
from app.engine.quant.chain import keep_kernel_dtype_

from .oracle import shared_prefix_prompts
from .quant_reference import teacher_forced_agreement


def _linear(n, k, bias, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(0.5)
    return lin


# 192: three whole blocks of 64 rows; 208: int8 ends in a partial block, int4 (whose CPU layout
# ends in a 16-row tail block) takes the whole-weight path
@pytest.mark.parametrize("n", [192, 208])
@pytest.mark.parametrize("cls", [Int4Linear, Int8Linear])
def test_blocked_dense_path_equals_whole_weight_dequantize(monkeypatch, cls, n):
    """Blocks of 64 rows (forced small) give the same values as dequantize + F.linear, in fp32 exactly."""
    monkeypatch.setattr(dense_blocks, "BLOCK_ELEMS", 64 * 128)  # 64 rows of K=128 per block: 3+ blocks
    lin = _linear(n, 128, bias=True)
    kw = dict(dense_min_m=4, cpu_compute_dtype=torch.float32)
    mod = Int4Linear.from_linear(lin, 64, **kw) if cls is Int4Linear else Int8Linear.from_linear(lin, **kw)
    x = torch.randn(9, 128)  # M = 9 >= dense_min_m: the dense path
    want = torch.nn.functional.linear(x, mod.dequantize_weight(torch.float32), lin.bias.detach())
    torch.testing.assert_close(mod(x), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mod(x), mod.reference_forward(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cls", [Int4Linear, Int8Linear])
def test_kept_kernel_dtype_same_values_no_cast(cls):
    """keep_kernel_dtype: the output is the kernel's bf16 (what the default path casts to fp32),
    the bias added in float32 promotes to float32; an input already in bf16 is not converted."""
    lin = _linear(64, 128, bias=False)
    mod = Int4Linear.from_linear(lin, 64) if cls is Int4Linear else Int8Linear.from_linear(lin)
    x = torch.randn(3, 128)
    base = mod(x)
    assert base.dtype == torch.float32
    model = torch.nn.Sequential(mod)
    assert keep_kernel_dtype_(model) == 1
    kept = mod(x)
    assert kept.dtype == torch.bfloat16 and torch.equal(kept.float(), base)
    assert torch.equal(mod(x.bfloat16()), kept)  # the kernel saw the same bf16 activations
    with_bias = _linear(64, 128, bias=True)
    mb = Int4Linear.from_linear(with_bias, 64) if cls is Int4Linear else Int8Linear.from_linear(with_bias)
    ref = mb(x)
    keep_kernel_dtype_(torch.nn.Sequential(mb))
    out = mb(x)
    assert out.dtype == torch.float32 and torch.equal(out, ref)


def test_keep_kernel_dtype_leaves_the_lm_head_alone():
    m = torch.nn.Module()
    m.proj = Int8Linear.from_linear(_linear(32, 64, bias=False))
    m.lm_head = Int8Linear.from_linear(_linear(32, 64, bias=False))
    assert keep_kernel_dtype_(m) == 1 and m.proj.keep_kernel_dtype and not m.lm_head.keep_kernel_dtype


@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_engine_with_kept_kernel_dtype_agrees_with_the_casting_path(tiny_checkpoint, fmt):
    """The engine keeps bf16 between quantized layers on the CPU (setup.py); against the same engine
    with every layer casting back to fp32: teacher-forced agreement of the greedy continuations
    (the SiLU gate and, without qkv bias, rotary run in bf16). Random weights give near-tied logits,
    so 3 prompts (36 positions) swung 0.86-1.0 with the quantizer's details and the checkpoint seed;
    8 prompts measured 0.92-0.99 over seeds 0-2 with the int4 grid search and without it."""
    path = tiny_checkpoint("tiny-llama")  # no qkv bias: q/k/v stay bf16 through rotary and attention
    # the fused decode step (float32 inside, VNNI kernels at every batch size) would bypass the chain
    llm = LLM(str(path), quantization=fmt, quant_cache_dir="", block_size=4, cpu_fused_decode=False)
    layers = [m for m in llm.runner.model.modules() if getattr(m, "keep_kernel_dtype", False)]
    assert layers  # the default on the CPU
    prompts = shared_prefix_prompts(n=8)
    outs = [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=12, ignore_eos=True))]
    old = LLM(str(path), quantization=fmt, quant_cache_dir="", block_size=4, cpu_fused_decode=False)
    assert keep_kernel_dtype_(old.runner.model, on=False) == len(layers)
    assert teacher_forced_agreement(old, prompts, outs) >= 0.9


def test_tied_embedding_choice_reaches_the_engine(tiny_checkpoint):
    """EngineConfig.quant_lm_head: "auto" stores a tied embedding / LM head in 8 bits on the
    CPU; "dense" keeps it in the model dtype (more memory, ~0.8 points more 8-bit agreement)."""
    path = str(tiny_checkpoint("tiny"))  # tied head
    auto = LLM(path, quantization="8bit", quant_cache_dir="", block_size=4)
    dense = LLM(path, quantization="8bit", quant_cache_dir="", block_size=4, quant_lm_head="dense")
    assert auto.load_report["quantization"]["tied_embedding"]["format"] == "8bit"
    assert dense.load_report["quantization"]["tied_embedding"] is None
    assert dense.load_report["quantization"]["bytes_after"] > auto.load_report["quantization"]["bytes_after"]


def test_untied_lm_head_in_8_bits_streamed_and_from_the_cache(tiny_checkpoint, tmp_path):
    """An untied LM head (tiny-llama) is stored per-row int8 on the CPU (it used to stay fp32): the
    streamed load and a start from the quantized-weights cache build the same head and outputs;
    "dense" keeps it an nn.Linear."""
    path = str(tiny_checkpoint("tiny-llama"))
    kw = dict(quantization="4bit", quant_cache_dir=str(tmp_path), block_size=4)
    cold = LLM(path, **kw)
    rep = cold.load_report["quantization"]
    assert rep["lm_head"] == {"name": "lm_head", "format": "8bit"} and "lm_head" in rep["quantized"]
    assert isinstance(cold.runner.model.lm_head, Int8Linear)
    warm = LLM(path, **kw)
    assert warm.load_report["quantization"]["cache"] == "hit"
    assert torch.equal(warm.runner.model.lm_head.qweight, cold.runner.model.lm_head.qweight)
    prompts = shared_prefix_prompts(n=2)
    sp = SamplingParams(max_tokens=8, ignore_eos=True)
    assert [o.token_ids for o in warm.generate(prompts, sp)] == [o.token_ids for o in cold.generate(prompts, sp)]
    dense = LLM(path, quant_lm_head="dense", **kw)
    assert type(dense.runner.model.lm_head) is torch.nn.Linear and dense.load_report["quantization"]["lm_head"] is None


def test_cpu_threads_setting(tiny_checkpoint):
    before = torch.get_num_threads()
    try:
        LLM(str(tiny_checkpoint("tiny")), device="cpu", cpu_threads=1, block_size=4)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="cpu_threads"):
        LLM(str(tiny_checkpoint("tiny")), device="cpu", cpu_threads=0)
