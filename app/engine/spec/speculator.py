"""Speculator: the engine's speculative-decoding hook (propose before schedule, verify after the
forward), shared by both proposers.

LLM.step calls `propose(running)` before `scheduler.schedule()`: it clears every sequence's
proposals, asks the policy whether this step speculates, and sets `seq.spec_token_ids` on decoding
sequences (prefill complete). The scheduler scores 1 + k positions for them (or drops the proposals
when the token budget is short) and `verify(...)` turns each span of logits rows into the tokens
to append: accepted proposals plus one token from the target. Rejected proposals leave KV behind in
slots past `num_computed_tokens`, which the next step overwrites before anything reads them.

It sees the engine only through a SpecContext, and learns what kind of step ran (speculative, pure
decode) from the SchedulerOutput.

Seeded sampled requests are never speculated on. Their promise is the same tokens whatever else
runs; rejection sampling draws from the request's generator a data-dependent number of times (the
draft's draws, one uniform per proposal, a residual draw), and whether a step speculates depends
on the automatic policy's wall-clock measurements and the batch, so the stream (and the tokens)
would depend on machine load. Greedy requests (no draws) and unseeded sampled requests (no
reproducibility promise; their distribution stays exact) are speculated on as before.
"""
from __future__ import annotations

import time

import torch

from ..config import SpeculativeConfig
from ..layers.sampler import sample
from ..scheduler import SchedulerOutput
from .context import SpecContext, seeded_sampled
from .policy import SpecPolicy
from .verify import greedy_accept, processed_probs, rejection_sample


class Speculator:
    def __init__(self, cfg: SpeculativeConfig, ctx: SpecContext, proposer):
        self.cfg, self.ctx, self.proposer = cfg, ctx, proposer
        self.policy = SpecPolicy(cfg.num_speculative_tokens, cfg.max_batch_size)
        self._q: dict[int, torch.Tensor] = {}  # seq_id -> (k, V) draft probabilities (sampled requests)
        self._step: tuple | None = None  # (t0, num_running) of the step being proposed for
        self.steps = self.spec_steps = 0
        self.proposed = self.accepted = self.verified = self.emitted = 0
        self.propose_seconds = 0.0

    # ----- before the schedule -------------------------------------------------------------
    def propose(self, running: list) -> None:
        t0 = time.perf_counter()
        self._q.clear()
        for seq in running:
            seq.spec_token_ids = []
        ids = {s.seq_id for s in running}
        self.proposer.retain(ids)
        self.policy.forget(ids)
        on = self.policy.should_speculate(len(running))
        if on:
            decoding = [s for s in running
                        if s.num_computed_tokens == s.num_tokens - 1 and not seeded_sampled(s.params)]
            ks = self._token_counts(decoding, running)
            if ks:
                props = self.proposer.propose([s for s in decoding if s.seq_id in ks], ks)
                for seq in decoding:
                    toks, q = props.get(seq.seq_id, ([], None))
                    seq.spec_token_ids = list(toks)
                    if q is not None and toks:
                        self._q[seq.seq_id] = q
        self.propose_seconds += time.perf_counter() - t0
        self._step = (t0, len(running))

    def _token_counts(self, decoding: list, running: list) -> dict[int, int]:
        """k per sequence: the policy's choice, capped by max_tokens, the model length and the
        KV blocks free beyond what plain decoding of every running sequence needs (proposals
        must never force a preemption)."""
        bm, max_len = self.ctx.block_manager, self.ctx.max_model_len
        free = bm.num_free_blocks - sum(max(0, bm.blocks_needed(s.num_tokens) - len(s.block_table))
                                        for s in running)
        ks: dict[int, int] = {}
        for seq in decoding:
            k = min(self.policy.num_tokens(seq.seq_id),
                    seq.params.max_tokens - seq.num_output_tokens - 1,  # the final token is free
                    max_len - seq.num_tokens - 1)
            have = max(len(seq.block_table), bm.blocks_needed(seq.num_tokens))
            while k > 0 and bm.blocks_needed(seq.num_tokens + k) - have > free:
                k -= 1
            if k > 0:
                free -= bm.blocks_needed(seq.num_tokens + k) - have
                ks[seq.seq_id] = k
        return ks

    # ----- after the forward ---------------------------------------------------------------
    def verify(self, logits: torch.Tensor, spans, out: SchedulerOutput, seqs_by_id: dict) -> dict[int, list[int]]:
        """logits (R, V) float32; spans [(seq_id, first_row, num_rows)] of the step `out`. Returns,
        per span, the accepted proposals followed by the target's own next token."""
        gen = self.ctx.generator_for
        res: dict[int, list[int]] = {}
        plain = []  # (seq_id, row) without proposals: sampled exactly as without speculation
        for sid, first, rows in spans:
            seq = seqs_by_id[sid]
            props = seq.spec_token_ids[: rows - 1]
            assert len(props) == rows - 1, "scheduler scored a different number of proposals"
            if not props:
                plain.append((sid, first))
                continue
            p = seq.params
            block = logits[first : first + rows]  # (k+1, V)
            if p.greedy:
                toks = greedy_accept(block, props)
            else:
                probs = processed_probs(block, p.temperature, p.top_k, p.top_p)
                q = self._q.get(sid)
                if q is not None and q.shape[-1] != probs.shape[-1]:
                    q = _fit_vocab(q, probs.shape[-1])
                toks = rejection_sample(probs, props, q, gen(sid))
            res[sid] = toks
            a = len(toks) - 1
            seq.spec_proposed += len(props)
            seq.spec_accepted += a
            seq.spec_verifications += 1
            self.policy.observe_verify(sid, len(props), a)
            self.proposed, self.accepted, self.verified = self.proposed + len(props), self.accepted + a, self.verified + 1
        if plain:
            rows = logits[torch.tensor([r for _, r in plain], device=logits.device)]
            params = [seqs_by_id[sid].params for sid, _ in plain]
            # The same call as the engine's sampler without speculation: seeded rows draw from
            # their request's generator, the others in one batch from the engine's.
            toks = sample(rows, [p.temperature for p in params], [p.top_k for p in params],
                          [p.top_p for p in params], [self.ctx.seq_generators.get(sid) for sid, _ in plain],
                          self.ctx.shared_generator).tolist()
            for (sid, _), t in zip(plain, toks):
                res[sid] = [t]
        self._record_step(out, res)
        return res

    def _record_step(self, out: SchedulerOutput, res: dict[int, list[int]]) -> None:
        if self._step is None:
            return
        (t0, n_running), self._step = self._step, None
        # A step counts as speculative only if proposals were scored: an "on" step where the
        # proposer found nothing (or the budget dropped them) is a plain decode step and must
        # not lower the "on" arm's rate.
        on = out.is_speculative
        self.steps += 1
        self.spec_steps += int(on)
        emitted = sum(len(v) for v in res.values())
        self.emitted += emitted
        # Only pure-decode steps are comparable (a prefill chunk would dominate the time).
        if out.is_pure_decode:
            self.policy.observe_step(n_running, on, emitted, time.perf_counter() - t0)

    # ----- reporting -----------------------------------------------------------------------
    def stats(self) -> dict:
        return {
            "spec_method": self.cfg.method,
            "spec_steps": self.spec_steps,
            "spec_proposed_tokens": self.proposed,
            "spec_accepted_tokens": self.accepted,
            "spec_acceptance_rate": self.accepted / self.proposed if self.proposed else 0.0,
            # tokens emitted per verified sequence-step (accepted proposals + the target's token)
            "spec_mean_accepted_len": (self.accepted + self.verified) / self.verified if self.verified else 0.0,
            "spec_auto_max_batch_size": self.policy.auto_max_batch_size(),
            "spec_propose_seconds": self.propose_seconds,
        }


def _fit_vocab(q: torch.Tensor, V: int) -> torch.Tensor:
    """Draft probabilities (k, Vd) onto the target's vocabulary width V (the rows past the
    tokenizer's vocabulary are padding in one model or the other and carry no mass)."""
    if q.shape[-1] > V:
        return q[:, :V]
    return torch.nn.functional.pad(q, (0, V - q.shape[-1]))
