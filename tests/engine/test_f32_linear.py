"""F32Linear (layers/f32_linear.py): our kernel for a few rows, oneDNN for more, F.linear (the
reference) where neither runs; all three equal within float32 summation-order error."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from app.engine import LLM, SamplingParams
from app.engine.layers import f32_linear
from app.engine.layers.f32_linear import F32Linear, use_f32_kernels_
from app.engine.quant import vnni

from .oracle import shared_prefix_prompts

needs_kernels = pytest.mark.skipif(not vnni.available(), reason=f"our CPU kernels cannot run here: {vnni.problem()}")


def _model(k=64, n=80, bias=True):
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(k, n, bias=bias), nn.Linear(n, 24, bias=False))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m


@needs_kernels
@pytest.mark.parametrize("k,bias", [(64, True), (48, False), (40, True)])  # 40: no kernel (K % 16), oneDNN / F.linear
def test_outputs_match_f_linear_at_every_m(k, bias):
    model = _model(k, bias=bias)
    ref = [(lin.weight.clone(), None if lin.bias is None else lin.bias.clone()) for lin in model]
    rep = use_f32_kernels_(model)
    assert rep["layers"] == 2 and all(type(m) is F32Linear for m in model)
    g = torch.Generator().manual_seed(1)
    for m in (1, 2, 3, 8, 9, 40, 301):
        x = torch.randn(m, k, generator=g) * 3
        want = F.linear(x, *ref[0])
        got = model[0](x)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    x3 = torch.randn(2, 5, k, generator=g)  # leading dimensions kept
    assert model[0](x3).shape == (2, 5, 80)


@needs_kernels
def test_dispatch_by_rows(monkeypatch):
    calls = []
    monkeypatch.setattr(vnni, "f32_mm", lambda x, w: calls.append("ours") or F.linear(x, w))
    onednn = f32_linear.onednn_linear
    monkeypatch.setattr(f32_linear, "onednn_linear", lambda *a: calls.append("onednn") or onednn(*a))
    model = _model()
    use_f32_kernels_(model)
    for m in (1, f32_linear.MAX_M, f32_linear.MAX_M + 1):
        model[0](torch.randn(m, 64))
    assert calls == ["ours", "ours", "onednn"]


@needs_kernels
def test_parts_that_cannot_run_fall_back(monkeypatch):
    model = _model()
    monkeypatch.setattr(f32_linear, "onednn_problem", lambda: "no oneDNN here")
    rep = use_f32_kernels_(model)
    assert rep["onednn"] == "no oneDNN here" and rep["small"] == "on"
    assert not model[0].onednn and model[0].small
    x = torch.randn(30, 64)  # above MAX_M: F.linear itself
    assert torch.equal(model[0](x), F.linear(x, model[0].weight, model[0].bias))
    plain = _model()
    assert use_f32_kernels_(plain, "torch")["layers"] == 0 and type(plain[0]) is nn.Linear


def test_onednn_probe_passes_on_this_torch():
    """The probe compares oneDNN's linear with F.linear; on the torch this project pins it runs."""
    assert f32_linear.onednn_problem() is None


@needs_kernels
def test_engine_report_tied_head_and_tokens(tiny_checkpoint):
    """A float32 engine swaps its dense Linears (the tied head stays the embedding's Parameter) and
    generates the tokens of the same engine on F.linear (cpu_kernels="torch")."""
    path = str(tiny_checkpoint("tiny"))  # tied head
    kw = dict(dtype="float32", block_size=4, max_num_seqs=4)
    llm = LLM(path, **kw)
    rep = llm.load_report["cpu_kernel"]
    assert rep["kernel"] == "f32" and rep["layers"] > 0 and rep["onednn"] == "on" and rep["small"] == "on"
    model = llm.runner.model
    assert type(model.lm_head) is F32Linear and model.lm_head.weight is model.model.embed_tokens.weight
    ref = LLM(path, cpu_kernels="torch", **kw)
    assert ref.load_report["cpu_kernel"]["kernel"] == "torch"
    prompts = shared_prefix_prompts(n=4, seed=21)
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    assert [o.token_ids for o in llm.generate(prompts, params)] == [o.token_ids for o in ref.generate(prompts, params)]


@needs_kernels
def test_draft_model_gets_the_same_kernels(tiny_checkpoint):
    """The draft model of speculative decoding is built apart from the target; its float32
    Linears are swapped too, and the speculative engine still gives plain greedy's tokens."""
    path = str(tiny_checkpoint("tiny"))
    kw = dict(dtype="float32", block_size=4, max_num_seqs=4)
    llm = LLM(path, speculative_method="draft", speculative_draft_model=path, speculative_max_batch_size=8, **kw)
    draft = llm.spec.proposer.runner.model
    assert any(type(m) is F32Linear for m in draft.modules())
    prompts = shared_prefix_prompts(n=3, seed=22)
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    want = [o.token_ids for o in LLM(path, **kw).generate(prompts, params)]
    assert [o.token_ids for o in llm.generate(prompts, params)] == want
    assert llm.stats["spec_proposed_tokens"] > 0
