"""The pieces the lean CPU forward (lean.py) calls instead of modules: bound linear kernels and the
RMSNorm it uses, each giving the module path's values bit for bit.

- `bind_linear(mod)`: a plain function x -> mod(x). For an exact nn.Linear, F.linear on its
  weight and bias (what nn.Linear.forward does, without two nn.Module attribute look-ups and the
  __call__ machinery); for the CPU int4/int8 layers, their forward's kernel call with the buffers
  bound once, used only after checking (`same_ops`) that it runs the very ops their forward runs
  (a new kernel in quant/ then keeps the layer's own forward until this is updated); anything
  else, the module's own bound `forward`.
- `rms(x, weight, eps)`: torch's F.rms_norm where it equals layers.norm.rms_norm bit for bit
  (float32 input and weight, checked once per process by `fused_rms_matches`), else rms_norm.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.norm import rms_norm
from ..quant import vnni
from ..quant.chain import finish_output


def bind_linear(mod: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if type(mod) is nn.Linear:
        return functools.partial(F.linear, weight=mod.weight, bias=mod.bias)
    fast = _cpu_kernel_call(mod)
    if fast is not None and same_ops(mod, fast):
        return fast
    return mod.forward


def _cpu_kernel_call(mod: nn.Module):
    """For Int4Linear / Int8Linear on their CPU kernel path: forward's kernel branch with its
    buffers bound once (forward reads them through nn.Module.__getattr__ and re-checks devices
    each call: ~6 us of a 15 us int4 call at batch 1). Rows at or past dense_min_m and inputs
    other than (M, K) go to forward itself. Used only if `same_ops` finds it runs forward's ops."""
    name = type(mod).__name__
    if name == "Int4Linear" and getattr(mod, "kdevice", None) == "cpu" and mod.packed.device.type == "cpu":
        op, args = torch.ops.aten._weight_int4pack_mm_for_cpu, (mod.packed, mod.group_size, mod.scales_and_zeros)
        fast = functools.partial(vnni.q4_mm, packed=mod.packed, sz=mod.scales_and_zeros, group_size=mod.group_size,
                                 n=mod.out_features)
    elif name == "Int8Linear" and getattr(mod, "use_kernel", False):
        op, args = torch.ops.aten._weight_int8pack_mm, (mod.qweight, mod.scale)
        fast = functools.partial(vnni.q8_mm, w=mod.qweight, scale=mod.scale)
    else:
        return None
    kdtype, bias, forward = mod.kdtype, mod.bias, mod.forward

    def call(x: torch.Tensor) -> torch.Tensor:  # (M, K) -> (M, N)
        # read per call, like keep_kernel_dtype: settable after load
        dense_min_m, vnni_max_m = mod.dense_min_m, getattr(mod, "vnni_max_m", 0)
        if x.dim() != 2:
            return forward(x)
        if x.shape[0] <= vnni_max_m:  # the VNNI kernel (quant/vnni.py), as forward runs it
            return finish_output(fast(x), bias, x.dtype, mod.keep_kernel_dtype)
        if dense_min_m is not None and x.shape[0] >= dense_min_m:
            return forward(x)
        return finish_output(op(x.to(kdtype).contiguous(), *args), bias, x.dtype, mod.keep_kernel_dtype)

    return call


_VIEWS = ("reshape", "view", "_unsafe_view", "alias", "as_strided", "detach", "contiguous")


def _ops(fn, x) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] not in _VIEWS:
                seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Record():
        fn(x)
    return seen


def same_ops(mod: nn.Module, fast) -> bool:
    """Does `fast` run the module's forward's ops (views aside), with equal results, on one row in
    float32 and in the kernel dtype, with the module's current settings? A forward that changed
    (another kernel) then keeps its own path. Checked once per kind of layer (class, its forward,
    kernel dtype, bias, settings): the ops do not depend on the weights' values."""
    if "forward" in vars(mod):  # this instance's own forward: no kind to share the answer with
        return _same_ops(mod, fast)
    bias = getattr(mod, "bias", None)
    key = (type(mod), type(mod).forward, mod.kdtype, None if bias is None else bias.dtype,
           mod.keep_kernel_dtype, mod.dense_min_m, mod.in_features, getattr(mod, "vnni_max_m", 0))
    if key not in _checked:
        _checked[key] = _same_ops(mod, fast)
    return _checked[key]


_checked: dict[tuple, bool] = {}


def _same_ops(mod: nn.Module, fast) -> bool:
    try:
        with torch.inference_mode():
            for dtype in (torch.float32, mod.kdtype):
                x = torch.randn(1, mod.in_features, generator=torch.Generator().manual_seed(0)).to(dtype)
                if _ops(mod.forward, x) != _ops(fast, x) or not torch.equal(mod.forward(x), fast(x)):
                    return False
    except Exception:  # noqa: BLE001 - a layer this check cannot run keeps its own forward
        return False
    return True


def has_hooks(mod: nn.Module) -> bool:
    """Hooks on the module itself: the lean path calls `forward` directly and would skip them."""
    return any(getattr(mod, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def global_hooks() -> bool:
    """Hooks registered for every module (nn.modules.module.register_module_forward_hook...)."""
    m = nn.modules.module
    return any(getattr(m, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks", "_global_forward_hooks_always_called"))


@functools.lru_cache(maxsize=None)
def fused_rms_matches() -> bool:
    """Does F.rms_norm give rms_norm's float32 values exactly in this torch? Checked on random rows
    of several widths, contiguous and strided, over a wide range of magnitudes (it is one fused
    kernel with the same reduction on torch 2.13; bf16 is not equal, it rounds once instead of
    twice, and is never used here)."""
    if not hasattr(F, "rms_norm"):
        return False
    g = torch.Generator().manual_seed(0)
    for n in (16, 64, 128, 896, 1536, 3584):
        for rows in (1, 5):
            x = torch.randn(rows, 2 * n, generator=g) * torch.logspace(-3, 3, rows).unsqueeze(1)
            w = torch.randn(n, generator=g)
            for xs in (x[:, :n].contiguous(), x[:, n:]):  # contiguous, and a strided view
                if not torch.equal(F.rms_norm(xs, (n,), w, 1e-6), rms_norm(xs, w, 1e-6)):
                    return False
    return True


def make_rms(weight: torch.Tensor, eps: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (..., dim) -> rms_norm(x, weight, eps), through F.rms_norm where that is exact."""
    if weight.dtype == torch.float32 and fused_rms_matches():
        shape = (weight.shape[0],)

        def rms(x: torch.Tensor) -> torch.Tensor:
            if x.dtype is torch.float32:
                return F.rms_norm(x, shape, weight, eps)
            return rms_norm(x, weight, eps)

        return rms
    return functools.partial(rms_norm, weight=weight, eps=eps)
