"""ModelRunner: a scheduled batch -> input tensors -> model forward -> logits of sampling rows.

Owns the model on its device and the paged KV pool (one (k, v) pair of
(num_blocks, block_size, num_kv_heads, head_dim) tensors per layer) with its KVCacheSpec (element
type, fp8 scales), which it hands to the attention layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention.backend import PagedAttention
from .attention.metadata import AttentionMetadata
from .inflight import PendingTokens, to_device
from .kv_cache_spec import KVCacheSpec, as_kv_spec
from .scheduler import SchedulerOutput


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # (T,) int64
    positions: torch.Tensor  # (T,) int64
    meta: AttentionMetadata
    logits_indices: torch.Tensor  # (R,) rows of the hidden states whose logits are needed
    # For each scheduled sequence that samples: (seq_id, first row in logits, number of rows)
    row_spans: list[tuple[int, int, int]]
    # Async scheduling: (row of input_ids, row of the previous step's sampled tokens) for each
    # placeholder, i.e. each input token whose value is still on the device.
    fills: list[tuple[int, int]] = field(default_factory=list)
    # logits_indices is every row in order (each token samples, as in pure decode): no gather needed
    all_rows: bool = False


class ModelRunner:
    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, block_size: int):
        self.model = model
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.attn_layers = [m for m in model.modules() if isinstance(m, PagedAttention)]
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.kv_spec = KVCacheSpec(dtype)
        self.graphs = None  # CudaGraphDecoder when decode runs through CUDA graphs
        self.lean = None  # LeanDecoder (models/lean.py) once use_lean_forward() enabled it

    @property
    def vocab_size(self) -> int:
        return self.model.spec.vocab_size

    # ----- KV pool -------------------------------------------------------------------------
    def kv_bytes_per_block(self, kv_dtype: torch.dtype) -> int:
        a = self.attn_layers[0]
        elem = torch.empty(0, dtype=kv_dtype).element_size()
        return 2 * len(self.attn_layers) * self.block_size * a.num_kv_heads * a.head_dim * elem

    @property
    def kv_dtype(self) -> torch.dtype:
        return self.kv_spec.dtype

    def allocate_kv_cache(self, num_blocks: int, spec: KVCacheSpec | torch.dtype) -> None:
        """spec: the cache's KVCacheSpec (fp8: calibrated, see kv_cache_spec.calibrated), or a
        dtype for a cache that needs no scales."""
        spec = as_kv_spec(spec)
        scales = [spec.layer_scales(i) for i in range(len(self.attn_layers))]  # fp8 without scales: error
        self.kv_spec, kv_dtype = spec, spec.dtype
        self.kv_caches = []
        for a, (k_scale, v_scale) in zip(self.attn_layers, scales):
            a.k_scale, a.v_scale = k_scale, v_scale
            shape = (num_blocks, self.block_size, a.num_kv_heads, a.head_dim)
            # Zeros, not empty: padded reads of unused slots must not meet NaN garbage.
            k = torch.zeros(shape, dtype=kv_dtype, device=self.device)
            v = torch.zeros(shape, dtype=kv_dtype, device=self.device)
            a.k_cache, a.v_cache = k, v
            self.kv_caches.append((k, v))

    def release_kv_cache(self) -> None:
        for a in self.attn_layers:
            a.k_cache = a.v_cache = torch.empty(0)
        self.kv_caches = []

    def set_backend(self, backend_module) -> None:
        for a in self.attn_layers:
            a.backend = backend_module

    # ----- one step ------------------------------------------------------------------------
    def prepare(self, out: SchedulerOutput, pending: PendingTokens | None = None) -> StepInputs:
        bs = self.block_size
        ids, pos, slots, qstart, seq_lens, qlens, tables = [], [], [], [0], [], [], []
        logits_idx, spans, fills = [], [], []
        for s in out.scheduled:
            seq = s.seq
            c, n = seq.num_computed_tokens, s.num_new_tokens
            toks = seq.token_ids[c : c + n]
            if len(toks) < n and getattr(seq, "num_placeholders", 0):
                fills.append((len(ids) + len(toks), _pending_row(pending, seq)))
                toks = toks + [0]  # overwritten on the device before the forward
            if len(toks) < n:  # trailing speculative proposals
                toks = toks + seq.spec_token_ids[: n - len(toks)]
            ids.extend(toks)
            p = range(c, c + n)
            pos.extend(p)
            bt = seq.block_table
            slots.extend(bt[i // bs] * bs + i % bs for i in p)
            start = qstart[-1]
            qstart.append(start + n)
            qlens.append(n)
            seq_lens.append(c + n)
            tables.append(bt)
            if s.samples:
                rows = s.num_spec_tokens + 1
                spans.append((seq.seq_id, len(logits_idx), rows))
                logits_idx.extend(range(start + n - rows, start + n))
        width = max(len(t) for t in tables)
        padded = [t + [0] * (width - len(t)) for t in tables]
        dev = self.device

        def t(x, dtype):
            return to_device(x, dtype, dev)

        meta = AttentionMetadata(
            slot_mapping=t(slots, torch.int64),
            query_start_loc=t(qstart, torch.int32),
            seq_lens=t(seq_lens, torch.int32),
            block_tables=t(padded, torch.int32),
            query_lens_cpu=qlens,
            seq_lens_cpu=seq_lens,
            max_query_len=max(qlens),
            max_seq_len=max(seq_lens),
        )
        # rows are distinct and increasing within [0, T): as many as T means all of them, in order
        return StepInputs(t(ids, torch.int64), t(pos, torch.int64), meta, t(logits_idx, torch.int64), spans,
                          fills, all_rows=len(logits_idx) == len(ids))

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, pending: PendingTokens | None = None
                ) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Runs the model; returns logits (R, vocab) float32 for the sampling rows, and the
        spans telling which rows belong to which sequence. `pending`: the previous step's
        sampled tokens, still on the device, when this step was scheduled before they landed."""
        if self.graphs is not None and self._graphable(out):
            return self._execute_graph(out, pending)
        inp = self.prepare(out, pending)
        if inp.fills:
            pending.fill(inp.input_ids, inp.fills)
        hidden, lean = self.forward(inp.input_ids, inp.positions, inp.meta)  # (T, hidden)
        if not inp.row_spans:
            return torch.empty(0, device=self.device), []
        rows = hidden if inp.all_rows else hidden[inp.logits_indices]
        return (self.lean if lean else self.model).compute_logits(rows), inp.row_spans

    def forward(self, input_ids, positions, meta) -> tuple[torch.Tensor, bool]:
        """-> ((T, hidden) states, whether the lean forward computed them). The lean forward where it
        applies; the model's own where not, and whenever the model's forward was replaced on the
        instance (a tool wrapping it sees every step; benchmarks wrap this method instead)."""
        if self.lean is not None and "forward" not in vars(self.model):
            hidden = self.lean.forward(input_ids, positions, meta)
            if hidden is not None:
                return hidden, True
        return self.model(input_ids, positions, meta), False

    def use_lean_forward(self, on: bool = True) -> str:
        """Run steps through the lean CPU forward (models/lean.py) where it applies; returns "on",
        or why it is off (then every step takes the module path, the reference)."""
        self.lean = None
        if not on:
            return "off (cpu_lean_forward=False)"
        from .models.lean import LeanDecoder

        self.lean, why = LeanDecoder.build(self.model)
        return "on" if self.lean is not None else f"off ({why})"

    def use_fused_decode(self, on: bool = True, why_off: str = "cpu_fused_decode=False") -> str:
        """Run the lean forward's pure-decode steps as one C call (models/fused_decode.py) where it
        applies; returns "on", or why it is off (then the lean forward runs them, the reference)."""
        if self.lean is None:
            return "off (no lean forward)"
        self.lean.fused = None
        if not on:
            return f"off ({why_off})"
        from .models.fused_decode import FusedDecode

        self.lean.fused, why = FusedDecode.build(self.model)
        return "on" if self.lean.fused is not None else f"off ({why})"

    def _graphable(self, out: SchedulerOutput) -> bool:
        return len(out.scheduled) <= self.graphs.max_bs and all(
            s.num_new_tokens == 1 and s.num_spec_tokens == 0 and s.samples for s in out.scheduled)

    def _execute_graph(self, out: SchedulerOutput, pending: PendingTokens | None):
        bs = self.block_size
        ids, pos, slots, lens, tables, spans, fills = [], [], [], [], [], [], []
        for i, s in enumerate(out.scheduled):
            seq = s.seq
            c = seq.num_computed_tokens
            if c < seq.num_tokens:
                ids.append(seq.token_ids[c])
            else:  # the placeholder: its value is on the device
                fills.append((i, _pending_row(pending, seq)))
                ids.append(0)
            pos.append(c)
            slots.append(seq.block_table[c // bs] * bs + c % bs)
            lens.append(c + 1)
            tables.append(seq.block_table)
            spans.append((seq.seq_id, i, 1))
        if fills:  # the graph decoder copies ids into its static buffer, then fills these rows
            return self.graphs.run(ids, pos, slots, lens, tables, (fills, pending)), spans
        return self.graphs.run(ids, pos, slots, lens, tables), spans


def _pending_row(pending: PendingTokens | None, seq) -> int:
    assert pending is not None and seq.seq_id in pending.row_of, (
        "a placeholder token without the step that samples it")
    return pending.row_of[seq.seq_id]

