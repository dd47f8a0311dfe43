"""int4: packing round trips, quantization error bounds, the kernel path against the reference path."""
import pytest
import torch

from app.engine.quant import Int4Linear, Int4Weights, dequantize_int4, quantize_int4
from app.engine.quant import int4_kernels as K
from app.engine.quant.int4 import pack_nibbles, pick_group_size, unpack_nibbles


def _w(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05


def test_nibble_pack_round_trip():
    q = torch.randint(0, 16, (48, 96), dtype=torch.uint8)
    p = pack_nibbles(q)
    assert p.shape == (48, 48) and p.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(p), q)
    assert int(p[0, 0]) == (int(q[0, 0]) << 4) | int(q[0, 1])  # even k in the high nibble


@pytest.mark.parametrize("n,k", [(64, 64), (176, 128), (16, 32), (1040, 64)])
def test_cpu_kernel_layout_round_trip(n, k):
    assert K.cpu_layout_known()
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    packed = K.pack_for_device(pack_nibbles(q), torch.device("cpu"))
    assert torch.equal(K.unpack_cpu(packed, n, k), q)


@pytest.mark.parametrize("g", [32, 64, 128, 256])
def test_quantize_dequantize_error_bound(g):
    w = _w(64, 512)
    w[3, :g] += 2.0  # a group with a large offset: the zero's bf16 rounding must stay inside the bound
    qw = quantize_int4(w, g)
    q = qw.unpacked()
    assert int(q.max()) <= 15
    deq = qw.dequantize()
    s = qw.scales.float().repeat_interleave(g, dim=1)
    z = qw.zeros.float().repeat_interleave(g, dim=1)
    # per element: half a step, plus the bf16 rounding of the zero (eps/2 relative), plus what a
    # scale rounded down leaves uncovered of the group's range (0 where the upper candidate won)
    wg = w.reshape(64, -1, g)
    span = wg.amax(-1).clamp(min=0) - wg.amin(-1).clamp(max=0)  # (N, G): the range, 0 included
    short = (span - 15 * qw.scales.float()).clamp(min=0).repeat_interleave(g, dim=1)
    bound = 0.5 * s + z.abs() * 2.0**-8 + short + 1e-7
    assert bool(((deq - w).abs() <= bound).all())
    # and on average far below the worst case
    assert (deq - w).abs().mean() < 0.3 * s.mean()


def test_scale_search_never_worse_than_rounding_the_scale_up(monkeypatch):
    """The kernels need bf16 scales: per group, the better of the bf16 scales below / above the
    exact one is kept, so every group's squared error is at most that of always rounding up."""
    from app.engine.quant import int4 as I4

    w = _w(64, 512, seed=3)
    both = quantize_int4(w, 64)
    real = I4._scale_candidates
    monkeypatch.setattr(I4, "_scale_candidates", lambda exact, dtype: real(exact, dtype)[1:])
    up = quantize_int4(w, 64)

    def group_err(qw):
        return (qw.dequantize() - w).square().reshape(64, -1, 64).sum(-1)

    assert bool((group_err(both) <= group_err(up) + 1e-9).all())
    assert group_err(both).sum() < group_err(up).sum()  # and some groups do pick the lower scale


def _rtn_fp32(w, g):
    """Plain round-to-nearest in float32 (benchmarks/quant_accuracy.py's baseline): range with 0,
    scale (max - min) / 15, integer zero point."""
    n, k = w.shape
    wg = w.reshape(n, k // g, g)
    lo, hi = wg.amin(-1, keepdim=True).clamp(max=0), wg.amax(-1, keepdim=True).clamp(min=0)
    s = ((hi - lo) / 15).clamp(min=1e-8)
    z = torch.round(-lo / s)
    return ((torch.clamp(torch.round(wg / s) + z, 0, 15) - z) * s).reshape(n, k)


@pytest.mark.parametrize("g", [32, 128])
def test_clip_search_never_worse_than_the_full_range_grid(g):
    """The grid search (clip ratios < 1 besides the full range) keeps, per group, the lowest squared
    error among its candidates, which include the whole previous method's: no group gets worse."""
    w = _w(96, 512, seed=5)
    w[::5, 3::17] *= 6  # some outliers too
    full = quantize_int4(w, g, clip_ratios=(1.0,))
    new = quantize_int4(w, g)

    def group_err(deq):
        return (deq - w).square().reshape(96, -1, g).sum(-1)  # (N, G)

    e_new, e_full, e_rtn = group_err(new.dequantize()), group_err(full.dequantize()), group_err(_rtn_fp32(w, g))
    assert bool((e_new <= e_full * (1 + 1e-6) + 1e-12).all())
    # and clipping pays overall (measured 0.96 at g=32, 0.91 at g=128), below float32 RTN's error too
    assert e_new.sum() < 0.98 * e_full.sum() and e_new.sum() < 0.98 * e_rtn.sum()
    assert new.scales.dtype == torch.bfloat16 and new.zeros.dtype == torch.bfloat16
    # 0 is still a level of every group (integer zero point), up to the bf16 rounding of `zero`
    # (bf16 unit roundoff 2^-8, relative to |8 - z| <= 8 steps)
    steps = (new.zeros.float() / new.scales.float()).reshape(-1)
    assert torch.allclose(steps, steps.round(), atol=8 * 2.0**-8 + 1e-4)


def test_clip_ratios_are_checked():
    for bad in [(), (0.9,), (1.0, 1.2), (1.0, 0.0)]:
        with pytest.raises(ValueError, match="clip_ratios"):
            quantize_int4(_w(8, 64), 32, clip_ratios=bad)


def test_hqq_never_worse_than_rtn():
    w = _w(64, 256, seed=1)
    w[::7, ::13] *= 8  # outliers, where an l_p fit helps
    rtn = (quantize_int4(w, 64).dequantize() - w).abs().mean()
    hqq = (quantize_int4(w, 64, hqq=True, hqq_iters=10).dequantize() - w).abs().mean()
    assert hqq <= rtn


def test_pick_group_size():
    assert pick_group_size(4096, 128) == 128
    assert pick_group_size(192, 128) == 64
    assert pick_group_size(96, 128) == 32
    assert pick_group_size(40, 128) is None


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("m", [1, 5, 40])
def test_int4_linear_fp32_kernel_matches_reference(bias, m):
    lin = torch.nn.Linear(256, 96, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(_w(96, 256, seed=2))
    mod = Int4Linear.from_linear(lin, 128, dense_min_m=None, cpu_compute_dtype=torch.float32)
    x = torch.randn(m, 256)
    y, ref = mod(x), mod.reference_forward(x)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    # and near the original layer: 4-bit RTN on Gaussian weights gives ~12% relative RMS error
    dense = lin(x).detach()
    assert (y - dense).norm() < 0.2 * dense.norm()


def test_int4_linear_bf16_kernel_and_dense_path():
    lin = torch.nn.Linear(128, 64)
    x = torch.randn(2, 7, 128)  # (batch, seq, hidden): leading dims are kept
    exact = Int4Linear.from_linear(lin, 64, dense_min_m=8, cpu_compute_dtype=torch.float32)
    ref = exact.reference_forward(x)
    torch.testing.assert_close(exact(x), ref, atol=1e-5, rtol=1e-5)  # M = 14 >= 8: fp32 dense path
    torch.testing.assert_close(exact.dequantize_weight(), exact.to_int4_weights().dequantize(), atol=1e-6, rtol=0)
    mod = Int4Linear.from_linear(lin, 64, dense_min_m=8, cpu_compute_dtype=torch.bfloat16)
    tol = 0.02 * ref.abs().max() + 1e-3  # activations (and the dense weight) rounded to bf16
    y_dense = mod(x)
    assert y_dense.dtype == torch.float32 and (y_dense - ref).abs().max() <= tol
    y_kernel = mod(x[:, :3])  # M = 6 < 8: the packed bf16 kernel
    assert y_kernel.shape == (2, 3, 64) and (y_kernel - ref[:, :3]).abs().max() <= tol


def test_int4_linear_round_trips_its_weights():
    lin = torch.nn.Linear(128, 48, bias=False)
    qw = quantize_int4(lin.weight, 32)
    mod = Int4Linear(qw, None, dense_min_m=None, cpu_compute_dtype=torch.float32)
    back = mod.to_int4_weights()
    assert torch.equal(back.qweight, qw.qweight)
    torch.testing.assert_close(mod.dequantize_weight(), qw.dequantize(), atol=0, rtol=0)


def test_unknown_cpu_layout_keeps_portable_copy(monkeypatch):
    monkeypatch.setattr(K, "cpu_layout_known", lambda: False)
    lin = torch.nn.Linear(64, 32)
    with pytest.warns(UserWarning, match="unknown CPU int4 layout"):
        mod = Int4Linear.from_linear(lin, 32, dense_min_m=4, cpu_compute_dtype=torch.float32)
    assert mod.qweight is not None
    x = torch.randn(6, 64)
    torch.testing.assert_close(mod(x), mod.reference_forward(x), atol=1e-5, rtol=1e-5)
    with pytest.warns(UserWarning):
        bare = Int4Linear.from_linear(lin, 32, dense_min_m=None, cpu_compute_dtype=torch.float32)
    assert bare.qweight is None  # no dense path: no second copy; dequantize goes through the kernel
    torch.testing.assert_close(bare.dequantize_weight(), mod.dequantize_weight(), atol=1e-6, rtol=0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="multiple of 16"):
        Int4Linear(quantize_int4(torch.randn(24, 64), 32), None)
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(torch.randn(16, 48), 32)


def test_dequantize_int4_reference_formula():
    q = torch.tensor([[0, 8, 15, 3]], dtype=torch.uint8)
    w = dequantize_int4(q, torch.tensor([[0.5, 2.0]]), torch.tensor([[1.0, -1.0]]), 2)
    assert w.tolist() == [[1.0 - 4.0, 1.0, -1.0 + 14.0, -1.0 - 10.0]]


def test_wrong_device_input_is_refused():
    mod = Int4Linear.from_linear(torch.nn.Linear(64, 32), 32)
    mod.kdevice = "cuda"  # as if packed for CUDA then moved: the layout would be wrong, so refuse
    with pytest.raises(ValueError, match="packed for cuda"):
        mod(torch.randn(2, 64))


def test_cpu_packing_in_row_blocks_equals_packing_whole(monkeypatch):
    """pack_for_device packs PACK_ROWS rows at a time (bounded int32 transient); the concatenated
    blocks must be byte-identical to packing the whole matrix (tails of < 64 rows included)."""
    from app.engine.quant import int4_kernels as K

    if not K.cpu_layout_known():
        pytest.skip("unknown CPU int4 layout: pack_for_device packs whole matrices")
    g = torch.Generator().manual_seed(0)
    for n, k in ((64 * 5 + 48, 64), (256 + 16, 128)):
        q = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
        whole = torch.ops.aten._convert_weight_to_int4pack_for_cpu(K.unpack_nibbles(q).to(torch.int32), 2)
        monkeypatch.setattr(K, "PACK_ROWS", 128)
        assert torch.equal(K.pack_for_device(q, torch.device("cpu")), whole)
