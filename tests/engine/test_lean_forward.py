"""The lean CPU forward (models/lean.py) == the module path (DecoderForCausalLM.forward), bit for bit
on the hidden states of every step it runs and token for token on greedy generations: Qwen2 (qkv
bias, tied and untied head), Llama, Qwen3 (QK-norm); unquantized fp32 and bf16, 4-bit and 8-bit;
batches whose membership changes mid-run (requests joining one per step, finishing at different
lengths)."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.attention import torch_cpu

from .oracle import run_staggered, shared_prefix_prompts

FAST = [("tiny", "4bit", "float32"), ("tiny-qwen3", None, "float32"), ("tiny-llama", "8bit", "float32")]
SLOW = [("tiny", None, "float32"), ("tiny", "8bit", "float32"), ("tiny-untied", "4bit", "float32"),
        ("tiny-untied", None, "float32"), ("tiny-llama", None, "float32"), ("tiny-llama", "4bit", "float32"),
        ("tiny-qwen3", "4bit", "float32"), ("tiny-qwen3", "8bit", "float32"), ("tiny-llama", None, "bfloat16"),
        ("tiny-qwen3", None, "bfloat16")]
CASES = FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW]


def _engine(path, quant, dtype, **kw):
    kw.setdefault("cpu_fused_decode", False)  # the fused step is not bit-identical (test_fused_decode.py)
    return LLM(str(path), quantization=quant, dtype=dtype, quant_cache_dir="", block_size=4, max_num_seqs=4, **kw)


def _checked(llm) -> list[tuple[bool, bool]]:
    """Make every lean step also run the module path on the same inputs; returns the record of
    (pure decode?, hidden states bit-identical?) per step. Running a step twice stores the same
    K/V twice (the same values), so the second run sees what the first did."""
    runner, seen = llm.runner, []
    lean = runner.lean.forward

    def both(ids, pos, meta):
        h = lean(ids, pos, meta)
        ref = runner.model(ids, pos, meta)
        seen.append((meta.is_pure_decode, h is not None and h.dtype == ref.dtype and torch.equal(h, ref)))
        return h

    runner.lean.forward = both
    return seen


@pytest.mark.parametrize("preset,quant,dtype", CASES)
def test_lean_forward_equals_module_path(tiny_checkpoint, preset, quant, dtype):
    path = tiny_checkpoint(preset)
    prompts = shared_prefix_prompts(n=5, seed=3)
    params = SamplingParams(max_tokens=9, ignore_eos=True)
    ref = _engine(path, quant, dtype, cpu_lean_forward=False)
    assert ref.runner.lean is None and ref.load_report["lean_forward"].startswith("off")
    want = [o.token_ids for o in run_staggered(ref, prompts, params)]

    llm = _engine(path, quant, dtype)
    assert llm.load_report["lean_forward"] == "on"
    seen = _checked(llm)
    before = dict(torch_cpu.counters)
    got = [o.token_ids for o in run_staggered(llm, prompts, params)]
    assert got == want
    assert seen and all(eq for _, eq in seen), [i for i, (_, eq) in enumerate(seen) if not eq]
    assert any(dec for dec, _ in seen) and not all(dec for dec, _ in seen)  # decode and prefill steps ran
    # the dense copies were extended, not only rebuilt, and by the lean forward's own decode step
    assert torch_cpu.counters["decode_appends"] > before["decode_appends"]


def test_lean_forward_with_different_lengths_in_one_batch(tiny_checkpoint):
    """generate() with prompts of different lengths: decode steps with a mask (sequences of
    different lengths) and sequences leaving the batch at different steps."""
    path = tiny_checkpoint("tiny")
    prompts = shared_prefix_prompts(n=4, seed=5)
    params = [SamplingParams(max_tokens=4 + 3 * i, ignore_eos=True) for i in range(len(prompts))]
    want = [o.token_ids for o in _engine(path, None, "float32", cpu_lean_forward=False).generate(prompts, params)]
    llm = _engine(path, None, "float32")
    seen = _checked(llm)
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    assert all(eq for _, eq in seen)


def test_hooks_keep_the_module_path(tiny_checkpoint):
    """A forward hook anywhere in the model: the lean forward is not built. A global module hook
    registered later: its steps run through the module path (so the hook sees them)."""
    path = tiny_checkpoint("tiny")
    llm = _engine(path, None, "float32")
    layer = llm.runner.model.model.layers[0].mlp
    h = layer.register_forward_hook(lambda *a: None)
    try:
        assert llm.runner.use_lean_forward() .startswith("off") and llm.runner.lean is None
    finally:
        h.remove()
    assert llm.runner.use_lean_forward() == "on"
    calls = []
    g = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    try:
        out = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=3, ignore_eos=True))
    finally:
        g.remove()
    assert len(out[0].token_ids) == 3 and "DecoderModel" in calls


def test_compiled_pieces_keep_the_module_path(tiny_checkpoint):
    """A module whose forward was replaced (what compile.py does to RMSNorm / SiluAndMul): off."""
    from app.engine.models.lean import LeanDecoder

    llm = _engine(tiny_checkpoint("tiny"), None, "float32")
    norm = llm.runner.model.model.norm
    norm.forward = norm.forward  # an instance attribute, as compile_model_ sets one
    lean, why = LeanDecoder.build(llm.runner.model)
    assert lean is None and "replaced forward" in why
