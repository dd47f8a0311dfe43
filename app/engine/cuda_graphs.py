"""CUDA-graph decode: capture the model's decode step once per batch-size bucket, replay it with
padded inputs. GPU only; `enforce_eager=True` turns it off.

Every bucket's graph reads the same static input buffers and shares one memory pool. Padding
rows write no KV (slot -1) and attend to one cached position of block 0, and their outputs are
dropped. Launch grids inside the graph must not depend on data: the attention backend sees a
block-table width fixed at max_model_len, so its kernels size themselves from that.
"""
from __future__ import annotations

import logging

import torch

from .attention.metadata import AttentionMetadata

log = logging.getLogger(__name__)


BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)


def default_buckets(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture; larger decode batches than the last bucket run eagerly."""
    cap = min(max_num_seqs, BUCKETS[-1])
    return [b for b in BUCKETS if b < cap] + [cap]


class CudaGraphDecoder:
    def __init__(self, model, device: torch.device, max_num_seqs: int, max_model_len: int, block_size: int,
                 capture: bool = True):
        self.model, self.device = model, device
        # capture=False runs the same padded static-buffer step eagerly instead of replaying a
        # graph: the test path for everything but the capture itself (works on the CPU).
        self.capture_enabled = capture
        self.buckets = sorted(set(default_buckets(max_num_seqs)))
        self.max_bs = self.buckets[-1]
        self.max_blocks = (max_model_len + block_size - 1) // block_size
        self.max_model_len = max_model_len
        n, dev = self.max_bs, device
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(n, dtype=torch.int64, device=dev)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.seq_lens = torch.ones(n, dtype=torch.int32, device=dev)
        self.block_tables = torch.zeros(n, self.max_blocks, dtype=torch.int32, device=dev)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}  # bucket -> (bucket, vocab) float32 output
        self.pool = None

    def _meta(self, b: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:b], query_start_loc=self.query_start_loc[: b + 1],
            seq_lens=self.seq_lens[:b], block_tables=self.block_tables[:b],
            query_lens_cpu=[1] * b, seq_lens_cpu=[self.max_model_len] * b,
            max_query_len=1, max_seq_len=self.max_model_len,
        )

    def _run(self, b: int) -> torch.Tensor:
        hidden = self.model(self.input_ids[:b], self.positions[:b], self._meta(b))
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def capture(self, b: int) -> None:
        self._reset_inputs(0)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up allocator and autotuning outside the graph
                self._run(b)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.logits[b] = self._run(b)
        self.pool = g.pool()
        self.graphs[b] = g

    def capture_all(self) -> None:
        for b in reversed(self.buckets):  # largest first, so smaller graphs reuse its pool
            self.capture(b)
        torch.cuda.synchronize(self.device)

    def bucket_for(self, n: int) -> int | None:
        for b in self.buckets:
            if b >= n:
                return b
        return None

    def _reset_inputs(self, start: int) -> None:
        self.input_ids[start:].zero_()
        self.positions[start:].zero_()
        self.slot_mapping[start:].fill_(-1)
        self.seq_lens[start:].fill_(1)
        self.block_tables[start:].zero_()

    @torch.inference_mode()
    def run(self, ids, positions, slots, seq_lens, tables: list[list[int]], fills=None) -> torch.Tensor:
        """One decode step for n sequences -> logits (n, vocab). Inputs are host lists.
        `fills` = ([(row, pending row)], PendingTokens): rows of `ids` whose token is still on the
        device (async scheduling); copied into the static buffer on the device."""
        n = len(ids)
        b = self.bucket_for(n)
        assert b is not None, "batch larger than the largest captured bucket"
        if self.capture_enabled and b not in self.graphs:  # a bucket capture_all() did not capture
            self.capture(b)
        width = max(len(t) for t in tables)
        bt = torch.zeros(b, width, dtype=torch.int32)
        for i, t in enumerate(tables):
            bt[i, : len(t)] = torch.tensor(t, dtype=torch.int32)
        dev = self.device
        self._reset_inputs(n)
        self.input_ids[:n].copy_(_staged(torch.tensor(ids), dev), non_blocking=True)
        self.positions[:n].copy_(_staged(torch.tensor(positions), dev), non_blocking=True)
        self.slot_mapping[:n].copy_(_staged(torch.tensor(slots), dev), non_blocking=True)
        self.seq_lens[:n].copy_(_staged(torch.tensor(seq_lens, dtype=torch.int32), dev), non_blocking=True)
        self.block_tables[:b, :width].copy_(_staged(bt, dev), non_blocking=True)
        self.block_tables[:b, width:].zero_()
        if fills is not None:
            rows, pending = fills
            pending.fill(self.input_ids, rows)
        if not self.capture_enabled:
            return self._run(b)[:n]
        self.graphs[b].replay()
        return self.logits[b][:n]


def _staged(cpu: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Pinned on a CUDA device: a non-blocking copy from pageable memory would wait for the stream."""
    return cpu.pin_memory() if dev.type == "cuda" else cpu
