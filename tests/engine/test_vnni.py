"""The AVX-512 VNNI small-M kernels (quant/vnni.py, cpu_vnni.c) against their torch references
(same arithmetic: activations int8 per block of 32; only float summation order differs), against
the plain dequantized weight (the approximation stays small), and in the engine."""
from __future__ import annotations

import pytest
import torch

from app.engine import LLM, SamplingParams
from app.engine.quant import Int4Linear, Int8Linear, vnni
from app.engine.quant import int4_kernels as K

from .oracle import shared_prefix_prompts
from .quant_reference import teacher_forced_agreement

needs_vnni = pytest.mark.skipif(not vnni.available(), reason=f"VNNI kernels unavailable: {vnni.problem()}")


def _int4(n, k, g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    s = (torch.rand(n, k // g, generator=gen) * 0.02 + 0.001).bfloat16()
    z = (torch.randn(n, k // g, generator=gen) * 0.02).bfloat16()
    return q, s.float(), z.float(), torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2), \
        K.scales_and_zeros(s.float(), z.float(), torch.bfloat16)


def _close(y, ref):  # float32 sums in another order than the float64 reference
    assert (y.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-7


@needs_vnni
@pytest.mark.parametrize("n,k,g", [(64, 128, 128), (192, 256, 64), (128, 512, 256), (64, 96, 32)])
@pytest.mark.parametrize("m", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q4_kernel_equals_its_reference(n, k, g, m, dtype):
    q, s, z, packed, sz = _int4(n, k, g, seed=n + k + m)
    x = torch.randn(m, k).to(dtype)
    x[0, :32] = 0  # a block of zeros: scale 0, not NaN
    _close(vnni.q4_mm(x, packed, sz, g, n), vnni.reference_q4(x, q, s, z, g))


@needs_vnni
@pytest.mark.parametrize("n,k", [(7, 64), (64, 192), (130, 128)])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q8_kernel_equals_its_reference(n, k, m, dtype):
    gen = torch.Generator().manual_seed(n + k)
    w = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    scale = (torch.rand(n, generator=gen) * 0.01).bfloat16()
    x = torch.randn(m, k).to(dtype)
    _close(vnni.q8_mm(x, w, scale), vnni.reference_q8(x, w, scale.float()))


def test_reference_rounds_half_to_even_with_an_ieee_division():
    """Ties of x * 127 / max|x| round to even (as the C code's nearbyintf), computed with one division."""
    x = torch.zeros(1, 32)
    x[0, :4] = torch.tensor([127.0, 0.5, 1.5, -2.5])
    xq, d, s = vnni.quantize_activations(x)
    assert xq[0, 0, :4].tolist() == [127.0, 0.0, 2.0, -2.0] and d.item() == 1.0 and s.item() == 126.5


@needs_vnni
def test_kernels_stay_close_to_the_dequantized_weight():
    """The only approximation is the int8 activation: relative error well under 2% on random data."""
    q, s, z, packed, sz = _int4(128, 256, 128)
    w = ((q.float() - 8).reshape(128, 2, 128) * s[..., None] + z[..., None]).reshape(128, 256)
    x = torch.randn(3, 256)
    exact = x @ w.t()
    assert ((vnni.q4_mm(x, packed, sz, 128, 128) - exact).norm() / exact.norm()).item() < 0.02
    w8 = torch.randint(-127, 128, (64, 256), dtype=torch.int8)
    sc = torch.rand(64).bfloat16()
    exact8 = x @ (w8.float() * sc.float()[:, None]).t()
    assert ((vnni.q8_mm(x, w8, sc) - exact8).norm() / exact8.norm()).item() < 0.02


@needs_vnni
def test_layers_take_the_kernel_up_to_max_m_and_torch_above(monkeypatch):
    lin = torch.nn.Linear(128, 64, bias=True)
    mods = [Int4Linear.from_linear(lin, 64), Int8Linear.from_linear(lin)]
    calls = []
    for name in ("q4_mm", "q8_mm"):
        real = getattr(vnni, name)
        monkeypatch.setattr(vnni, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    model = torch.nn.ModuleList(mods)
    rep = vnni.use_vnni_(model, "auto")
    assert rep["kernel"] == "vnni" and rep["layers"] == 2
    for mod, fmt in zip(mods, ("4bit", "8bit")):
        limit = vnni.MAX_M[fmt] or 200  # None: every M (int4 prefill too)
        for m in (1, limit, limit + 1):
            calls.clear()
            x = torch.randn(m, 128)
            y = mod(x)
            assert calls == ([] if vnni.MAX_M[fmt] and m > limit else [("q4_mm", "q8_mm")[fmt == "8bit"]])
            ref = mod.reference_forward(x)
            assert ((y - ref).norm() / ref.norm()).item() < 0.03  # bias added, right rows
    assert vnni.use_vnni_(model, "torch")["kernel"] == "torch" and all(m.vnni_max_m == 0 for m in mods)


def test_required_kernels_say_why_they_cannot_run(monkeypatch):
    monkeypatch.setattr(vnni, "_load", lambda: (None, "this CPU lacks avx512_vnni"))
    model = torch.nn.ModuleList([Int8Linear.from_linear(torch.nn.Linear(64, 8))])
    assert vnni.use_vnni_(model, "auto") == {"kernel": "torch", "layers": 0, "reason": "this CPU lacks avx512_vnni"}
    with pytest.raises(ValueError, match="lacks avx512_vnni.*'auto' or 'torch'"):
        vnni.use_vnni_(model, "vnni")
    with pytest.raises(ValueError, match="cpu_kernels"):
        vnni.use_vnni_(model, "fast")


@needs_vnni
@pytest.mark.parametrize("fmt", ["4bit", "8bit"])
def test_engine_with_vnni_kernels_agrees_with_torch_kernels(tiny_checkpoint, fmt):
    """Batch-1 decode through the VNNI kernels vs the same engine on torch's kernels: teacher-forced
    agreement of the greedy continuations (the torch-kernel engine scoring the VNNI one's tokens)."""
    path = str(tiny_checkpoint("tiny"))
    kw = dict(quantization=fmt, quant_cache_dir="", block_size=4)
    fast = LLM(path, **kw)
    rep = fast.load_report.quantization.cpu_kernel
    assert rep["kernel"] == "vnni" and rep["layers"] >= 8  # every projection of both layers + the head
    slow = LLM(path, cpu_kernels="torch", **kw)
    assert slow.load_report.quantization.cpu_kernel["kernel"] == "torch"
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    outs = [fast.generate([p], sp)[0].token_ids for p in prompts]  # one at a time: M = 1 decode steps
    assert teacher_forced_agreement(slow, prompts, outs) >= 0.9


@needs_vnni
@pytest.mark.parametrize("n,k", [(7, 64), (130, 128), (64, 320)])
def test_bf16_kernel_matches_f_linear(n, k):
    """vdpbf16ps: exact bf16 products, float32 sums in another order, one rounding: equal to
    F.linear's bf16 result within one bf16 ulp (on these shapes: bit for bit)."""
    from app.engine.layers.bf16_linear import Bf16Linear, use_bf16_kernel_

    torch.manual_seed(n)
    model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=True)).to(torch.bfloat16)
    weight = model[0].weight
    xs = {m: torch.randn(m, k).bfloat16() for m in (1, 2, 3)}
    want = {m: model(x) for m, x in xs.items()}
    rep = use_bf16_kernel_(model, "auto")
    assert rep["layers"] == 1 and isinstance(model[0], Bf16Linear) and model[0].weight is weight
    for m, x in xs.items():
        torch.testing.assert_close(model(x), want[m], atol=0, rtol=2 ** -7)
    assert (model(xs[1]) == want[1]).float().mean().item() >= 0.99


@needs_vnni
def test_engine_bf16_with_the_kernel_agrees_with_torch(tiny_checkpoint):
    path = str(tiny_checkpoint("tiny"))  # tied head: the tie survives the swap
    fast = LLM(path, dtype="bfloat16", block_size=4)
    assert fast.load_report.cpu_kernel["kernel"] == "vnni"
    model = fast.runner.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    slow = LLM(path, dtype="bfloat16", block_size=4, cpu_kernels="torch")
    assert slow.load_report.cpu_kernel["kernel"] == "torch"
    prompts = shared_prefix_prompts(n=3)
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    outs = [fast.generate([p], sp)[0].token_ids for p in prompts]
    assert teacher_forced_agreement(slow, prompts, outs) >= 0.95


@needs_vnni
def test_kernels_take_the_callers_thread_count_and_do_not_depend_on_it():
    """Threads split output rows only: 1 and 2 threads give the same bits."""
    q, s, z, packed, sz = _int4(256, 256, 128)
    w8 = torch.randint(-127, 128, (256, 256), dtype=torch.int8)
    sc = torch.rand(256).bfloat16()
    x = torch.randn(3, 256)
    before = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            outs.append((vnni.q4_mm(x, packed, sz, 128, 256), vnni.q8_mm(x[:1], w8, sc), vnni.bf16_mm(x, w8.bfloat16())))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs))
