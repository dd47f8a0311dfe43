"""Async scheduling's pieces: PendingTokens (the tokens a launched step sampled, on their way
from the device to the host) and `resolve_async_scheduling` (whether the loop overlaps, and why).

With async scheduling (see scheduler.py) the engine queues step N+1 before it reads step N's
tokens. The sampled ids stay on the device, where step N+1's input preparation reads the ones it
needs (ModelRunner fills its placeholder rows from `tokens`), while one non-blocking copy brings
them into pinned host memory. `result()` is the step's single host synchronisation.

On the CPU the "device" tensor already is host memory and nothing waits: the same bookkeeping
runs, without any speedup, which is what lets the CPU tests exercise the overlapped loop.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class PendingTokens:
    def __init__(self, tokens: torch.Tensor, seq_ids: list[int], aux: dict[str, torch.Tensor] | None = None):
        """aux: other per-step tensors the host needs with the tokens (log-probs), copied the same way."""
        assert tokens.dim() == 1 and len(seq_ids) == tokens.shape[0], "one sampled token per sequence"
        self.tokens = tokens  # (R,) int64 on the device; row i belongs to seq_ids[i]
        self.row_of = {sid: i for i, sid in enumerate(seq_ids)}
        self.event = None
        self.on_result = None  # called once with the host copy of `aux` when result() runs
        if tokens.is_cuda:
            # Pinned destination: a non-blocking copy from the device cannot be pageable. The
            # event is recorded right after the copies, so waiting on it never waits for later steps.
            self.host = _to_pinned(tokens)
            self.aux = {k: _to_pinned(v) for k, v in (aux or {}).items()}
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.aux = tokens, dict(aux or {})

    def fill(self, input_ids: torch.Tensor, fills: list[tuple[int, int]]) -> None:
        """input_ids[row] = tokens[src] for each (row, src): the next step's placeholder inputs,
        written on the device, so nothing waits for this step to finish."""
        dev = input_ids.device
        rows = to_device([r for r, _ in fills], torch.int64, dev)
        src = to_device([p for _, p in fills], torch.int64, dev)
        input_ids.index_copy_(0, rows, self.tokens.index_select(0, src))

    def result(self) -> dict[int, list[int]]:
        """Blocks until the tokens are on the host; seq_id -> [token]."""
        if self.event is not None:
            self.event.synchronize()
        if self.on_result is not None:
            self.on_result(self.aux)
            self.on_result = None
        vals = self.host.tolist()
        return {sid: [vals[i]] for sid, i in self.row_of.items()}


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


def to_device(x: list, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """A host list as a device tensor without a host sync: a CUDA copy from pageable memory can
    wait for the stream (a blocking one always does), so the staging tensor is pinned (the caching
    host allocator keeps it alive until the copy has run)."""
    cpu = torch.tensor(x, dtype=dtype)
    if dev.type == "cuda":
        return cpu.pin_memory().to(dev, non_blocking=True)
    return cpu.to(dev)


def resolve_async_scheduling(cfg, device: torch.device, backend: str, speculative: bool) -> tuple[bool, str]:
    """Whether the step loop overlaps (async scheduling), and why (for the load report)."""
    want = cfg.async_scheduling
    if want is False:
        return False, "async_scheduling=False"
    if want is None and device.type != "cuda":
        return False, "off by default on the CPU: the forward is synchronous (async_scheduling=True forces it)"
    if speculative:
        reason = ("off: speculative decoding proposes step N+1's tokens from step N's accepted tokens, "
                  "which must be on the host first")
    elif backend != "native":
        reason = f"off: the {backend} runner cannot read placeholder tokens on the device"
    else:
        return True, "async_scheduling=True" if want else "on by default on CUDA"
    if want:
        log.warning("async_scheduling=True was asked for but is %s", reason)
    return False, reason

