"""torch.compile for the pieces that pay: RMSNorm, the SiLU-gated activation, rotary embedding.

These are chains of small elementwise ops that inductor fuses into one kernel each; the matmuls
and the attention kernels are already single kernels and stay as they are. Compilation is tried
on a small input at start-up, so a failure falls back to eager with a warning instead of
failing the first real step.
"""
from __future__ import annotations

import functools
import logging
import time
import warnings

import torch

from .layers.activation import SiluAndMul, silu_and_mul
from .layers.norm import RMSNorm, rms_norm
from .layers.rotary import RotaryEmbedding, apply_rotary
from .load_report import CompileReport

log = logging.getLogger(__name__)


def compile_model_(model: torch.nn.Module, device: torch.device) -> CompileReport:
    """Compiles the elementwise modules of `model` in place; reports whether it is active, the
    warm-up time, the modules compiled and, when it fell back to eager, why.

    Each piece is compiled once as a pure function of tensors and shared by every layer: compiling
    a bound method would specialise (and recompile) per module instance and hit dynamo's
    recompile limit after a few layers, silently leaving the rest eager.
    """
    t0 = time.perf_counter()
    targets = [m for m in model.modules() if isinstance(m, (RMSNorm, SiluAndMul, RotaryEmbedding))]
    try:
        rms = torch.compile(rms_norm, dynamic=True)
        silu_mul = torch.compile(silu_and_mul, dynamic=True)
        rotate = torch.compile(apply_rotary, dynamic=True)
        for m in targets:
            if isinstance(m, RotaryEmbedding):
                m._apply_rotary = rotate
            elif isinstance(m, RMSNorm):
                m.forward = functools.partial(rms, weight=m.weight, eps=m.eps)
            else:
                m.forward = silu_mul
        _smoke_test(model, device)
    except Exception as e:  # compile failures vary by platform and version: never fatal
        for m in targets:
            m.__dict__.pop("forward", None)  # back to the class's eager forward
            if isinstance(m, RotaryEmbedding):
                m._apply_rotary = None
        msg = f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running eager"
        warnings.warn(msg, stacklevel=2)
        return CompileReport(active=False, seconds=time.perf_counter() - t0, modules=0, error=msg)
    return CompileReport(active=True, seconds=time.perf_counter() - t0, modules=len(targets))


def _smoke_test(model, device) -> None:
    """Runs each compiled module once on tiny inputs (triggers compilation now)."""
    dtype = next(m.weight.dtype for m in model.modules() if isinstance(m, RMSNorm))
    with torch.inference_mode():  # in the model's dtype: a compiled graph is specialised on dtype
        for m in model.modules():
            if isinstance(m, RMSNorm):
                m(torch.randn(3, m.weight.shape[0], device=device, dtype=dtype))
                break
        for m in model.modules():
            if isinstance(m, SiluAndMul):
                m(torch.randn(3, 8, device=device, dtype=dtype))
                break
