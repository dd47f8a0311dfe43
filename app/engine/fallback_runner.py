"""FallbackRunner: the scheduler's steps on a transformers model (see models/hf_fallback.py).

Same contract as ModelRunner.execute: a SchedulerOutput in, (logits (R, vocab) float32, row_spans)
out, so the LLM facade, the scheduler (continuous batching, chunked prefill, preemption) and the
sampler are shared with the native backend.

Each running sequence owns one dense transformers cache. In a step, the sequences that decode one
token on a plain full-attention cache run as ONE forward: their caches are stacked left-padded
(with an attention mask over the pads) and split back into views afterwards. Everything else
(prefill chunks, decode + speculative proposals, sliding-window models such as Gemma 2) runs one
forward per sequence. `batch_decode = False` forces one forward per sequence everywhere: the
reference the tests compare the stacked path against.

Before a forward the cache is brought to exactly `seq.num_computed_tokens` tokens: rejected
speculative tokens are cropped off; a preempted sequence (num_computed_tokens reset to 0) starts
from an empty cache, i.e. is recomputed; a cache that cannot be cropped (a sliding-window layer
past its window) is rebuilt from the sequence's tokens. Caches of finished or preempted sequences
are dropped at the next step.

Why not transformers' own paged attention / continuous batching: it is tied to its own scheduler,
request manager and cache allocator, while the engine's scheduler decides every step here. Why
not a persistent batched cache: sequences join and leave every step, so it would be re-laid out
every step anyway. Measured on the CPU (4 layers, hidden 256, 64-token prompts, 32 new tokens,
1 thread): 150 tok/s at batch 1, 444 tok/s at batch 8 (145 tok/s with one forward per sequence);
transformers' batched `generate` 502 tok/s. The KV "blocks" the scheduler counts are virtual: they
size admission from a memory budget (dense K+V bytes per token); nothing is preallocated.
"""
from __future__ import annotations

import weakref

import torch

from .models.hf_fallback import HFCausalLM
from .scheduler import SchedulerOutput
from .sequence import SequenceStatus


class _SeqState:
    __slots__ = ("ref", "cache")

    def __init__(self, seq, cache):
        self.ref = weakref.ref(seq)
        self.cache = cache


class FallbackRunner:
    backend_name = "transformers-fallback"

    def __init__(self, model: HFCausalLM, device: torch.device, dtype: torch.dtype, block_size: int):
        self.model = model
        self.device, self.dtype, self.block_size = device, dtype, block_size
        self.attn_layers: list = []  # no paged attention layers: the backend has no pool to point at
        self.kv_caches: list = []
        self.kv_dtype = dtype
        self.num_blocks = 0
        self.states: dict[int, _SeqState] = {}  # seq_id -> its dense cache
        self.forwards = 0
        self.recomputes = 0  # caches rebuilt because they could not be cropped
        self.batched_decodes = 0  # decode tokens computed in a stacked multi-sequence forward
        # Decode steps of several sequences run as one left-padded batch (False: one forward each,
        # the slow obviously-correct reference the tests compare against).
        self.batch_decode = True

    @property
    def vocab_size(self) -> int:
        return self.model.spec.vocab_size

    # ----- virtual KV pool (sizes the scheduler's admission only) --------------------------
    def kv_bytes_per_block(self, kv_dtype: torch.dtype) -> int:
        return self.block_size * self.model.spec.kv_bytes_per_token(kv_dtype)

    def allocate_kv_cache(self, num_blocks: int, spec) -> None:
        """spec: a KVCacheSpec or a dtype. Dense caches grow on demand; only the budget is recorded."""
        self.num_blocks, self.kv_dtype = num_blocks, getattr(spec, "dtype", spec)

    # ----- per-sequence caches -------------------------------------------------------------
    def _prune(self, keep: set[int]) -> None:
        """Drop caches of sequences that finished, were preempted or no longer exist."""
        for sid in list(self.states):
            if sid in keep:
                continue
            seq = self.states[sid].ref()
            if seq is None or seq.status != SequenceStatus.RUNNING or seq.num_computed_tokens == 0:
                del self.states[sid]

    def _cache_for(self, seq) -> tuple[object, int]:
        """The sequence's cache holding exactly its first `start` tokens, and `start`
        (seq.num_computed_tokens, or 0 when the cache had to be rebuilt)."""
        c = seq.num_computed_tokens
        st = self.states.get(seq.seq_id)
        if st is None or st.ref() is not seq or c == 0:
            st = self.states[seq.seq_id] = _SeqState(seq, self.model.new_cache())
            if c > 0:  # no cache for tokens the scheduler counts as computed: rebuild it
                self.recomputes += 1
            return st.cache, 0
        have = self.model.cache_len(st.cache)
        if have == c:
            return st.cache, c
        if have > c:  # rejected speculative tokens
            try:
                st.cache.crop(c - have)  # a negative count removes that many tokens
                if self.model.cache_len(st.cache) == c:
                    return st.cache, c
            except (RuntimeError, ValueError):
                pass  # sliding-window layer past its window: cannot roll back
        st.cache = self.model.new_cache()
        self.recomputes += 1
        return st.cache, 0

    # ----- one step ------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, pending=None) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Forwards each scheduled sequence's new tokens; returns logits (R, vocab) float32 of the
        sampling rows and (seq_id, first row, number of rows) per sampling sequence."""
        if pending is not None:  # async scheduling is refused for this backend at load (inflight.py)
            raise ValueError("the transformers fallback runner cannot take a step's tokens still on the device")
        self._prune({s.seq.seq_id for s in out.scheduled})
        logits_of: dict[int, torch.Tensor] = {}  # seq_id -> (rows, vocab)
        decode, decode_lens = [], []
        for s in out.scheduled:
            seq = s.seq
            cache, start = self._cache_for(seq)
            if (self.batch_decode and s.num_new_tokens == 1 and s.num_spec_tokens == 0 and s.samples
                    and start == seq.num_computed_tokens and self.model.batchable(cache)):
                decode.append(s)
                decode_lens.append(start)
                continue
            end = seq.num_computed_tokens + s.num_new_tokens
            toks = seq.token_ids[start:end]
            if len(toks) < end - start:  # trailing speculative proposals
                toks = toks + seq.spec_token_ids[: end - start - len(toks)]
            k = s.num_spec_tokens + 1 if s.samples else 0
            ids = torch.tensor(toks, dtype=torch.int64, device=self.device)  # (L,)
            logits = self.model(ids, start, cache, k)  # (k, vocab)
            self.forwards += 1
            if k:
                logits_of[seq.seq_id] = logits
        if len(decode) == 1:  # nothing to batch with: the plain path, no stacking copies
            s, = decode
            ids = torch.tensor([s.seq.token_ids[decode_lens[0]]], device=self.device)
            logits_of[s.seq.seq_id] = self.model(ids, decode_lens[0], self.states[s.seq.seq_id].cache, 1)
            self.forwards += 1
        elif decode:
            ids = torch.tensor([s.seq.token_ids[n] for s, n in zip(decode, decode_lens)], device=self.device)
            rows = self.model.decode_batch(ids, [self.states[s.seq.seq_id].cache for s in decode], decode_lens)
            for i, s in enumerate(decode):
                logits_of[s.seq.seq_id] = rows[i : i + 1]
            self.forwards += 1
            self.batched_decodes += len(decode)
        spans, parts, nrows = [], [], 0
        for s in out.scheduled:  # rows in scheduling order
            lg = logits_of.get(s.seq.seq_id)
            if lg is not None:
                spans.append((s.seq.seq_id, nrows, lg.shape[0]))
                parts.append(lg)
                nrows += lg.shape[0]
        if not spans:
            return torch.empty(0, device=self.device), []
        return torch.cat(parts), spans
