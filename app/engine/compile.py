"""torch.compile for the pieces that pay: RMSNorm, the SiLU-gated activation, rotary embedding.

These are chains of small elementwise ops that inductor fuses into one kernel each; the matmuls
and the attention kernels are already single kernels and stay as they are. Compilation is tried
on a small input at start-up, so a failure falls back to eager with a warning instead of
failing the first real step.
"""
from __future__ import annotations

import logging
import time
import warnings

import torch

from .layers.activation import SiluAndMul
from .layers.norm import RMSNorm
from .layers.rotary import RotaryEmbedding

log = logging.getLogger(__name__)


def compile_model_(model: torch.nn.Module, device: torch.device) -> dict:
    """Compiles the elementwise modules of `model` in place. Returns a report:
    {"active": bool, "seconds": warm-up time, "modules": n, "error": str | None}."""
    t0 = time.perf_counter()
    targets = [m for m in model.modules() if isinstance(m, (RMSNorm, SiluAndMul, RotaryEmbedding))]
    originals = {m: m.forward for m in targets}
    try:
        fns = {}
        for cls in (RMSNorm, SiluAndMul):
            fns[cls] = torch.compile(cls.forward, dynamic=True)
        fns[RotaryEmbedding] = torch.compile(_rotate, dynamic=True)
        for m in targets:
            if isinstance(m, RotaryEmbedding):
                m._apply_rotary = fns[RotaryEmbedding]
            else:
                m.forward = fns[type(m)].__get__(m)
        _smoke_test(model, device)
    except Exception as e:  # compile failures vary by platform and version: never fatal
        for m, f in originals.items():
            m.forward = f
            if isinstance(m, RotaryEmbedding):
                m._apply_rotary = None
        msg = f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running eager"
        warnings.warn(msg, stacklevel=2)
        return {"active": False, "seconds": time.perf_counter() - t0, "modules": 0, "error": msg}
    return {"active": True, "seconds": time.perf_counter() - t0, "modules": len(targets), "error": None}


def _rotate(q, k, cos, sin):
    def half(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    return q * cos + half(q) * sin, k * cos + half(k) * sin


def _smoke_test(model, device) -> None:
    """Runs each compiled module once on tiny inputs (triggers compilation now)."""
    with torch.inference_mode():
        for m in model.modules():
            if isinstance(m, RMSNorm):
                m(torch.randn(3, m.weight.shape[0], device=device, dtype=m.weight.dtype))
                break
        for m in model.modules():
            if isinstance(m, SiluAndMul):
                m(torch.randn(3, 8, device=device))
                break
