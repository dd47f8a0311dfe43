"""int8 and fp8 layers against their reference paths; format support; the fp8 KV scale helper."""
import pytest
import torch

from app.engine.quant import (Fp8Linear, Int8Linear, QuantConfig, compute_kv_scale, quantize_int8,
                              quantize_model_, supported_formats)
from app.engine.quant.fp8 import FP8, FP8_MAX, quantize_rowwise_fp8


def test_int8_error_bound():
    w = torch.randn(32, 80) * 0.1
    w[5] *= 30  # a loud row does not hurt the others: scales are per row
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    deq = q.float() * s[:, None]
    # half a step, plus what a bf16 scale rounded down clips off the row's largest weight
    clip = (w.abs().amax(dim=1) - 127 * s).clamp(min=0)[:, None]
    assert bool(((deq - w).abs() <= 0.5 * s[:, None] + clip + 1e-7).all())
    # the scale search keeps, per row, the lower squared error of the bf16 scales around the exact one
    from app.engine.quant.int4 import _scale_candidates

    for cand in _scale_candidates((w.abs().amax(dim=1) / 127).clamp(min=1e-8), torch.bfloat16):
        err = ((w / cand[:, None]).round().clamp(-127, 127) * cand[:, None] - w).square().sum(1)
        assert bool(((deq - w).square().sum(1) <= err + 1e-9).all())


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_kernel_matches_reference(bias):
    lin = torch.nn.Linear(96, 40, bias=bias)
    x = torch.randn(2, 3, 96)
    mod = Int8Linear.from_linear(lin, dense_min_m=None, cpu_compute_dtype=torch.float32)
    torch.testing.assert_close(mod(x), mod.reference_forward(x), atol=1e-4, rtol=1e-4)
    bf = Int8Linear.from_linear(lin, dense_min_m=None, cpu_compute_dtype=torch.bfloat16)
    ref = bf.reference_forward(x)
    assert (bf(x) - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3  # bf16 activations
    dense = Int8Linear.from_linear(lin, dense_min_m=1, cpu_compute_dtype=torch.float32)
    torch.testing.assert_close(dense(x), ref, atol=1e-5, rtol=1e-5)
    dense_bf = Int8Linear.from_linear(lin, dense_min_m=1, cpu_compute_dtype=torch.bfloat16)
    assert (dense_bf(x) - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3
    assert (mod(x) - lin(x)).norm() < 0.02 * lin(x).norm()


def test_fp8_rowwise_quantization_bound():
    t = torch.randn(16, 64) * torch.logspace(-3, 3, 16)[:, None]
    q, s = quantize_rowwise_fp8(t)
    assert q.dtype == FP8 and float(q.float().abs().max()) <= FP8_MAX
    deq = q.float() * s
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normals, plus subnormal spacing 2^-9 * scale
    assert bool(((deq - t).abs() <= t.abs() * 2.0**-4 + s * 2.0**-9).all())


def _cpu_scaled_mm_works():
    try:
        x, sx = quantize_rowwise_fp8(torch.randn(16, 32))
        torch._scaled_mm(x, x.t(), scale_a=sx, scale_b=sx.t(), out_dtype=torch.bfloat16)
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _cpu_scaled_mm_works(), reason="this torch has no CPU row-wise _scaled_mm")
def test_fp8_linear_math_on_cpu():
    # Only the math: quantize_model_ refuses fp8 on CPU (supported_formats), the layer itself runs here.
    lin = torch.nn.Linear(64, 48)
    mod = Fp8Linear.from_linear(lin)
    x = torch.randn(5, 64)
    ref = mod.reference_forward(x)
    assert (mod(x) - ref).abs().max() <= 2.0**-7 * ref.abs().max() + 1e-3  # bf16 output rounding
    assert (mod(x) - lin(x)).norm() < 0.1 * lin(x).norm()


def test_supported_formats_cpu_and_clear_fp8_error():
    sup = supported_formats("cpu")
    assert sup["4bit"] is None and sup["8bit"] is None
    assert "compute capability" in sup["fp8"]
    model = torch.nn.Sequential(torch.nn.Linear(32, 32))
    with pytest.raises(ValueError, match="fp8"):
        quantize_model_(model, QuantConfig(format="fp8"))
    assert type(model[0]) is torch.nn.Linear  # nothing was swapped


def test_quant_config_validation():
    with pytest.raises(ValueError, match="unknown quantization format"):
        QuantConfig(format="3bit")
    with pytest.raises(ValueError, match="group_size"):
        QuantConfig(format="4bit", group_size=100)
    with pytest.raises(ValueError, match="dense_min_m"):
        QuantConfig(format="4bit", dense_min_m=0)


def test_compute_kv_scale_round_trip():
    kv = torch.randn(64, 2, 16) * 37.0
    scale = compute_kv_scale(kv)
    stored = (kv / scale).to(FP8)
    assert not torch.isnan(stored.float()).any()
    assert abs(float(stored.float().abs().max()) - FP8_MAX) <= 16  # the largest value lands at the top
    back = stored.float() * scale
    assert bool(((back - kv).abs() <= kv.abs() * 2.0**-4 + scale * 2.0**-9).all())
    assert compute_kv_scale(torch.zeros(3)) == 1.0
    assert compute_kv_scale(kv, margin=2.0) == pytest.approx(2 * scale)
    with pytest.raises(ValueError):
        compute_kv_scale(torch.tensor([1.0, float("nan")]))


def test_int8_linear_realigns_a_misaligned_weight():
    # The CPU int8 kernel segfaults on weights that are not 64-byte aligned (e.g. read from a file).
    q, s = quantize_int8(torch.randn(64, 64))
    buf = torch.empty(q.numel() + 64, dtype=torch.int8)
    off = next(i for i in range(1, 64) if (buf.data_ptr() + i) % 64 == 8)
    mis = buf[off : off + q.numel()].view(64, 64)
    mis.copy_(q)
    assert mis.data_ptr() % 64 == 8
    mod = Int8Linear(mis, s, None, dense_min_m=None, cpu_compute_dtype=torch.bfloat16)
    assert mod.qweight.data_ptr() % 64 == 0
    x = torch.randn(5, 64)
    ref = mod.reference_forward(x)
    assert (mod(x) - ref).abs().max() <= 0.02 * ref.abs().max() + 1e-3
