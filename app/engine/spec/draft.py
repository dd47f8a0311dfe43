"""Draft-model proposer: a second, smaller model of the target's family, run by its own
ModelRunner with its own paged KV pool, proposing k tokens per sequence autoregressively,
batched across sequences.

Each target sequence has a draft-side shadow (`_DraftSeq`) holding the tokens whose KV the draft
has computed. Before proposing, the shadow is synced to the sequence's confirmed tokens: its KV
stays valid up to the first position where what the draft was fed (earlier proposals) differs
from what the target confirmed, so only the accepted tokens' KV survives and the rest is
overwritten. The draft then catches up on every confirmed token it has not seen (the whole prompt
the first time; chunked to the engine's token budget) and runs k - 1 more single-token steps.
Draft KV blocks are private (no prefix caching); when the pool runs out, the least recently used
shadows of sequences not proposing in this step are dropped, and recomputed if needed again.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..block_manager import BlockManager
from ..config import SpeculativeConfig
from ..loader import load_hf_config
from ..names import resolve_model_path
from ..model_runner import ModelRunner
from ..scheduler import ScheduledSeq, SchedulerOutput
from ..setup import build_model
from ..tokenizer import Tokenizer
from .context import SpecContext
from .verify import processed_probs



def draft_kv_blocks(target_blocks: int, seqs: int, max_model_len: int, k: int, block_size: int) -> int:
    """The draft's pool when setup planned none: the target's, capped by what seqs sequences hold."""
    return max(1, min(target_blocks, seqs * -(-(max_model_len + k) // block_size)))


class _DraftSeq:
    """Duck-types the fields ModelRunner.prepare reads from a Sequence."""

    __slots__ = ("seq_id", "token_ids", "block_table", "num_computed_tokens", "spec_token_ids",
                 "confirmed", "last_used")

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.token_ids: list[int] = []
        self.block_table: list[int] = []
        self.num_computed_tokens = 0
        self.spec_token_ids: list[int] = []
        self.confirmed = 0  # leading tokens known to equal the target sequence's tokens
        self.last_used = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def check_same_vocabulary(target: Tokenizer, draft: Tokenizer, target_name: str, draft_name: str) -> None:
    tv, dv = target.hf.get_vocab(), draft.hf.get_vocab()
    if tv == dv:
        return
    differ = sum(1 for t, i in dv.items() if tv.get(t) != i)
    raise ValueError(
        f"draft model {draft_name!r} does not share the vocabulary of target model {target_name!r} "
        f"({len(dv)} vs {len(tv)} tokens, {differ} of the draft's tokens differ): speculative decoding "
        "needs a draft model from the same family with the same tokenizer, e.g. Qwen2.5-Coder-7B + "
        "Qwen2.5-Coder-1.5B (not Qwen2.5-Coder-7B + Llama-3-1B); pick such a draft, or use "
        "speculative_method='ngram' (prompt lookup, no draft model)")


class DraftProposer:
    def __init__(self, cfg: SpeculativeConfig, ctx: SpecContext):
        ecfg, self.ctx = ctx.config, ctx
        path = resolve_model_path(cfg.draft_model)
        self.tokenizer = Tokenizer(path, ecfg.trust_remote_code)
        check_same_vocabulary(ctx.tokenizer, self.tokenizer, ecfg.model, cfg.draft_model)
        hf = load_hf_config(path, ecfg.trust_remote_code)
        self.max_positions = int(getattr(hf, "max_position_embeddings", 4096))
        dcfg = replace(ecfg, model=str(cfg.draft_model), lora_path=None, quantization=None,
                       speculative=SpeculativeConfig())
        model, _ = build_model(dcfg, path, hf, ctx.device, ctx.dtype, self.max_positions)
        if ctx.device.type == "cpu" and ctx.dtype in (torch.float32, torch.bfloat16):
            # the target's dense-Linear kernels for the draft too (layers/f32_linear.py, bf16_linear.py)
            from ..layers.bf16_linear import use_bf16_kernel_
            from ..layers.f32_linear import use_f32_kernels_

            (use_f32_kernels_ if ctx.dtype == torch.float32 else use_bf16_kernel_)(model, ecfg.cpu_kernels)
        bs = ecfg.block_size
        self.runner = ModelRunner(model, ctx.device, ctx.dtype, bs)
        self.runner.set_backend(ctx.attn_backend)
        if ctx.device.type == "cpu":
            self.runner.use_lean_forward(ecfg.cpu_lean_forward)
            self.runner.use_fused_decode(ecfg.cpu_fused_decode and ecfg.cpu_kernels != "torch")
        # Planned with the target's pool, before either was allocated (setup.plan_kv_pool): as many
        # blocks as the target's, capped by what its sequences can hold.
        self.num_blocks = int(ctx.planned_draft_kv_blocks or draft_kv_blocks(
            ctx.num_kv_blocks, cfg.max_batch_size or ecfg.max_num_seqs, ctx.max_model_len,
            cfg.num_speculative_tokens, bs))
        self.runner.allocate_kv_cache(self.num_blocks, ctx.dtype)
        self.bm = BlockManager(self.num_blocks, bs, enable_prefix_caching=False)
        self.vocab = ctx.vocab_size  # target logits width
        self.token_budget = ecfg.max_num_batched_tokens
        self.states: dict[int, _DraftSeq] = {}
        self._clock = 0
        self.forwards = 0

    # ----- shadow bookkeeping --------------------------------------------------------------
    def retain(self, seq_ids: set[int]) -> None:
        for sid in [s for s in self.states if s not in seq_ids]:
            self._drop(sid)

    def _drop(self, sid: int) -> None:
        d = self.states.pop(sid)
        self.bm.release(d.block_table)

    def _sync(self, seq) -> _DraftSeq:
        d = self.states.get(seq.seq_id)
        if d is None:
            d = self.states[seq.seq_id] = _DraftSeq(seq.seq_id)
        toks = seq.token_ids
        n = min(d.num_computed_tokens, len(toks))
        i = min(d.confirmed, n)
        while i < n and d.token_ids[i] == toks[i]:
            i += 1
        del d.token_ids[i:]
        d.token_ids.extend(toks[i:])
        d.confirmed = len(toks)
        d.num_computed_tokens = min(i, len(toks) - 1)  # the last token is always fed again
        d.last_used = self._clock
        return d

    def _reserve(self, d: _DraftSeq, num_tokens: int, protect: set[int]) -> bool:
        need = self.bm.blocks_needed(num_tokens) - len(d.block_table)
        while need > 0:
            new = self.bm.allocate(need)
            if new is not None:
                d.block_table.extend(new)
                return True
            victims = [v for v in self.states.values() if v.seq_id not in protect and v.block_table]
            if not victims:
                return False
            self._drop(min(victims, key=lambda v: v.last_used).seq_id)
        return True

    # ----- proposing -----------------------------------------------------------------------
    def propose(self, seqs: list, ks: dict[int, int]) -> dict[int, tuple[list[int], torch.Tensor | None]]:
        """{seq_id: (k proposals, (k, V) draft probabilities or None for greedy requests)}."""
        self._clock += 1
        protect = {s.seq_id for s in seqs}
        live = []
        for seq in seqs:
            d = self._sync(seq)
            k = min(ks[seq.seq_id], self.max_positions - d.num_tokens + 1)
            if k >= 1 and self._reserve(d, d.num_tokens + k - 1, protect):
                live.append((seq, d, k))
        if not live:
            return {}
        rows = self._catch_up([d for _, d, _ in live])  # seq_id -> (V,) logits after the last token
        props: dict[int, list[int]] = {seq.seq_id: [] for seq, _, _ in live}
        qs: dict[int, list[torch.Tensor]] = {seq.seq_id: [] for seq, _, _ in live}
        active = live
        while True:
            for seq, d, _ in active:
                x, q = self._choose(rows[seq.seq_id], seq.params, self.ctx.generator_for(seq.seq_id))
                d.token_ids.append(x)
                props[seq.seq_id].append(x)
                if q is not None:
                    qs[seq.seq_id].append(q)
            active = [(s, d, k) for s, d, k in active if len(props[s.seq_id]) < k]
            if not active:
                break
            rows = self._run([ScheduledSeq(d, 1) for _, d, _ in active])
        return {sid: (p, torch.stack(qs[sid]) if qs[sid] else None) for sid, p in props.items()}

    def _catch_up(self, ds: list[_DraftSeq]) -> dict[int, torch.Tensor]:
        """Feed every not-yet-computed token, in forwards of at most the engine's token budget."""
        rows: dict[int, torch.Tensor] = {}
        pending = ds
        while pending:
            budget, sched = self.token_budget, []
            for d in pending:
                if budget <= 0:
                    break
                n = min(d.num_tokens - d.num_computed_tokens, budget)
                sched.append(ScheduledSeq(d, n))
                budget -= n
            rows.update(self._run(sched))
            pending = [d for d in pending if d.num_computed_tokens < d.num_tokens]
        return rows

    def _run(self, sched: list[ScheduledSeq]) -> dict[int, torch.Tensor]:
        logits, spans = self.runner.execute(SchedulerOutput(scheduled=sched))  # (R, Vd)
        self.forwards += 1
        for s in sched:
            s.seq.num_computed_tokens += s.num_new_tokens
        if logits.shape[-1] > self.vocab:  # padding rows of the draft's embedding
            logits = logits[:, : self.vocab]
        elif logits.shape[-1] < self.vocab:
            logits = torch.nn.functional.pad(logits, (0, self.vocab - logits.shape[-1]), value=float("-inf"))
        return {sid: logits[first] for sid, first, _ in spans}

    def _choose(self, row: torch.Tensor, params, gen) -> tuple[int, torch.Tensor | None]:
        if params.greedy:
            return int(row.argmax()), None
        q = processed_probs(row[None], params.temperature, params.top_k, params.top_p)[0]  # (V,)
        return int(torch.multinomial(q, 1, generator=gen)), q
