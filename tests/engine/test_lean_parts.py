"""The lean forward's pieces (models/lean_parts.py): bound int4/int8 kernel calls == the layers'
forward bit for bit (and not used once a layer's forward runs other ops, e.g. a new kernel), and
the RMSNorm it picks == layers.norm.rms_norm bit for bit."""
from __future__ import annotations

import pytest
import torch

from app.engine.layers.norm import rms_norm
from app.engine.models import lean_parts
from app.engine.models.lean_parts import bind_linear, make_rms
from app.engine.quant import Int4Linear, Int8Linear


def _layer(cls, bias: bool, keep: bool):
    lin = torch.nn.Linear(64, 48, bias=bias)
    with torch.no_grad():
        lin.weight.normal_(generator=torch.Generator().manual_seed(1))
    m = Int4Linear.from_linear(lin, 32, dense_min_m=6) if cls is Int4Linear else \
        Int8Linear.from_linear(lin, dense_min_m=6)
    m.keep_kernel_dtype = keep
    return m


@pytest.mark.parametrize("cls", [Int4Linear, Int8Linear])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("keep", [False, True])
def test_bound_kernel_equals_forward(cls, bias, keep):
    m = _layer(cls, bias, keep)
    f = bind_linear(m)
    assert getattr(f, "__name__", "") == "call"  # the bound kernel, not the module's forward
    g = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        for rows in (1, 3, 6, 9):  # 6 and 9: at/past dense_min_m, handed to forward
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(rows, 64, generator=g).to(dtype)
                y, ref = f(x), m.forward(x)
                assert y.dtype == ref.dtype and torch.equal(y, ref)
        m.keep_kernel_dtype = not keep  # changed after binding: followed
        x = torch.randn(2, 64, generator=g)
        assert torch.equal(f(x), m.forward(x)) and f(x).dtype == m.forward(x).dtype


def test_a_changed_forward_keeps_its_own_path(monkeypatch):
    """A quantized layer whose forward now runs other ops (a new kernel in quant/) is not replaced
    by the bound call: the layer's own forward is used."""
    m = _layer(Int4Linear, bias=False, keep=True)

    def new_forward(self, x):  # "another kernel": dequantize + F.linear
        return torch.nn.functional.linear(x.to(self.kdtype), self.dequantize_weight(self.kdtype))

    monkeypatch.setattr(Int4Linear, "forward", new_forward)
    f = bind_linear(m)
    assert getattr(f, "__name__", "") != "call"
    x = torch.randn(1, 64)
    assert torch.equal(f(x), new_forward(m, x))


def test_plain_linear_bound_to_f_linear():
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    assert torch.equal(bind_linear(lin)(x), lin(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
def test_picked_rms_norm_is_the_reference_bit_for_bit(dtype, wdtype):
    g = torch.Generator().manual_seed(3)
    for n in (16, 64, 1536):
        w = torch.randn(n, generator=g).to(wdtype)
        rms = make_rms(w, 1e-6)
        for rows in (1, 4):
            x = (torch.randn(rows, 2 * n, generator=g) * 37.0).to(dtype)[:, ::2]  # strided, as q/k views are
            got, ref = rms(x), rms_norm(x, w, 1e-6)
            assert got.dtype == ref.dtype and torch.equal(got, ref)


def test_fused_rms_norm_probe_is_used_only_when_it_matches(monkeypatch):
    w = torch.randn(32)
    monkeypatch.setattr(lean_parts, "fused_rms_matches", lambda: False)
    x = torch.randn(2, 32)
    assert torch.equal(make_rms(w, 1e-6)(x), rms_norm(x, w, 1e-6))


@pytest.mark.skipif(not __import__("app.engine.quant.vnni", fromlist=["x"]).available(),
                    reason="VNNI kernels unavailable here")
@pytest.mark.parametrize("cls", [Int4Linear, Int8Linear])
@pytest.mark.parametrize("bias", [False, True])
def test_bound_kernel_follows_the_vnni_path(cls, bias):
    """With the VNNI kernels on (quant/vnni.use_vnni_, the engine's CPU default) the bound call runs
    them for the rows forward gives them, and torch's kernels above: equal to forward bit for bit."""
    from app.engine.quant.vnni import use_vnni_

    lin = torch.nn.Linear(64, 128, bias=bias)
    m = Int4Linear.from_linear(lin, 32, dense_min_m=6) if cls is Int4Linear else Int8Linear.from_linear(lin, dense_min_m=6)
    m.keep_kernel_dtype = True
    assert use_vnni_(torch.nn.ModuleList([m]))["layers"] == 1 and m.vnni_max_m > 0
    f = bind_linear(m)
    assert getattr(f, "__name__", "") == "call"
    with torch.inference_mode():
        for rows in (1, 2, 7):
            x = torch.randn(rows, 64)
            assert torch.equal(f(x), m.forward(x))
