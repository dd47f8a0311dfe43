"""Load time and resident memory while an engine loads, for load_report.load."""
from __future__ import annotations

import time

import torch

from . import memory


class LoadMeter:
    """Load time and this process's resident memory while loading (memory.py) for load_report."""

    def __init__(self):
        # torch's one-time CPU set-up (thread pool, allocator arenas: ~25 MB on first ops) belongs to
        # the process, not to this load: let a first small op pay it before the baseline is taken
        torch.arange(64.0).outer(torch.arange(64.0)).cos_().sum()
        self.reset = memory.reset_peak()
        self.rss0 = memory.rss()
        self.t0 = time.perf_counter()

    def done(self, model) -> dict:
        from .quant import weight_bytes

        peak, now, final = memory.peak_rss(), memory.rss(), weight_bytes(model)
        out = {"seconds": time.perf_counter() - self.t0, "model_bytes": final, "rss_before": self.rss0,
               "rss_after": now, "peak_rss": peak, "peak_is_of_load": self.reset}
        if peak is not None and self.rss0 is not None and self.reset:
            # the growth over the process's memory before the load, relative to the model it built
            out["peak_growth_bytes"] = peak - self.rss0
            out["peak_growth_over_model"] = (peak - self.rss0) / max(final, 1)
        return out
