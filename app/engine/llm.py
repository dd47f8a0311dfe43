"""LLM: the engine's facade. Load a checkpoint, then `generate()` or drive the step loop.

    llm = LLM("path/or/hub-id")
    outs = llm.generate(["prompt", ...], SamplingParams(max_tokens=128))

`add_request` / `step` / `has_unfinished` let callers (the doc generator's background thread)
drive continuous batching themselves; `step()` returns the requests that finished in it.

With async scheduling (EngineConfig.async_scheduling, on by default on CUDA) `step()` first
schedules and launches step N+1, then waits for step N's tokens (the one host sync of the step)
and applies them, so the host's scheduling and input preparation run while the device computes.
A request therefore comes back from the step() call after the one that computed its last token.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence as Seq

import torch

from .block_manager import BlockManager
from .config import EngineConfig, SpeculativeConfig, budget_weight_format
from .errors import UnsupportedFeature
from .inflight import PendingTokens, resolve_async_scheduling
from .load_report import LoadReport
from .logprobs import Logprobs, mask_min_tokens
from .outputs import RequestOutput
from .parallel_sampling import SampleGroups, child_params
from .progress import GenerateProgress
from .request_texts import RequestTexts
from .sampling_params import SamplingParams
from .scheduler import Scheduler, SchedulerOutput
from .sequence import Sequence, SequenceStatus
from .setup import build_engine_parts


@dataclass
class _Launched:
    """A step queued on the device whose sampled tokens have not been applied yet."""
    out: SchedulerOutput
    pending: PendingTokens


class LLM:
    backend: str  # "native" | "transformers-fallback" (load_report.BACKENDS), set on every load
    load_report: LoadReport

    def __init__(self, model: str, **kwargs):
        spec_keys = {f.name for f in fields(SpeculativeConfig)}
        spec_kw = {k[len("speculative_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("speculative_")
                   and k[len("speculative_"):] in spec_keys}
        if spec_kw:
            kwargs["speculative"] = SpeculativeConfig(**spec_kw)
        self.config = cfg = EngineConfig(model=str(model), **kwargs)
        parts = build_engine_parts(cfg)
        self.tokenizer = parts.tokenizer
        self.runner = parts.runner
        self.device, self.dtype = parts.device, parts.dtype
        self.hf_config = parts.hf_config
        self.max_model_len = parts.max_model_len
        self.num_kv_blocks = parts.num_blocks
        self.load_report = parts.report
        self.backend = parts.backend  # "native" | "transformers-fallback"
        # Asked for and possible with this runner (the fallback has no paged KV): cfg stays as given.
        self.prefix_caching = cfg.enable_prefix_caching and parts.capabilities.prefix_caching
        self.block_manager = BlockManager(parts.num_blocks, cfg.block_size, self.prefix_caching)
        weights = budget_weight_format(self.load_report.quantization)
        self.scheduler = Scheduler(
            self.block_manager, cfg.max_num_seqs, cfg.resolve_max_num_batched_tokens(self.device, weights),
            self.max_model_len, self.tokenizer.eos_token_ids,
        )
        self._generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._seq_generators: dict[int, torch.Generator] = {}
        self._requests: dict[str, Sequence] = {}
        self._texts = RequestTexts(self.tokenizer)  # prompt texts, stop strings, the outputs' text
        self._early: list[RequestOutput] = []  # rejected requests, reported by the next step()
        self._groups = SampleGroups()  # n > 1 requests, fanned out into n samples
        self._logprobs = Logprobs()  # seq id -> per-token log-probs (requests that asked)
        self._next_id = 0
        # Speculative decoding (app/engine/spec): proposes tokens before each schedule and
        # verifies the scored rows after the forward. None when off.
        self.spec = None
        if cfg.speculative.method:
            self.spec = self._build_speculator()

        self.async_scheduling, reason = resolve_async_scheduling(cfg, self.device, self.backend, self.spec is not None)
        self.load_report.async_scheduling = {"active": self.async_scheduling, "reason": reason}
        self._inflight: _Launched | None = None  # async scheduling: the step on the device
        self._failed_launch: tuple[SchedulerOutput, Exception] | None = None

    def _build_speculator(self):
        """The speculator, or (when optional) n-gram lookup instead of an unusable draft model, or
        none; the weights already loaded are kept either way."""
        from .spec import build_speculator

        cfg = self.config
        feature = "draft_model" if cfg.speculative.method == "draft" else "speculative_decoding"
        try:
            return build_speculator(cfg.speculative, self._spec_context())
        except Exception as e:  # noqa: BLE001 - reported by feature name, never by traceback text
            reason = f"{type(e).__name__}: {e}"
            if feature not in cfg.optional_features:
                raise UnsupportedFeature(feature, reason) from e
        self.load_report.disable(feature, reason)
        if feature == "draft_model":  # prompt lookup needs no second model
            cfg.speculative = replace(cfg.speculative, method="ngram", draft_model=None)
            return self._build_speculator()
        cfg.speculative = SpeculativeConfig()
        return None

    def _spec_context(self):
        from .spec import SpecContext

        return SpecContext(
            block_manager=self.block_manager, max_model_len=self.max_model_len,
            seq_generators=self._seq_generators, shared_generator=self._generator,
            config=self.config, tokenizer=self.tokenizer, device=self.device, dtype=self.dtype,
            # Only a draft model reads these two; the fallback runner (no paged attention layers,
            # no DecoderSpec) refuses one at load.
            attn_backend=self.runner.attn_layers[0].backend if self.runner.attn_layers else None,
            vocab_size=self.runner.vocab_size,
            num_kv_blocks=self.num_kv_blocks, planned_draft_kv_blocks=self.load_report.draft_kv_blocks)

    # ----- requests ------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, priority: int = 0) -> str:
        """Queue a request; returns its id. A request that cannot run (empty, too long) is not
        raised on: it comes back from the next `step()` with finish_reason "error". `priority`:
        lower is admitted first (and preempted last); equal priorities are first come, first served."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"priority must be an int (lower is served first), got {priority!r}")
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError("params must be a SamplingParams")
        if request_id is None:
            request_id, self._next_id = str(self._next_id), self._next_id + 1
        if request_id in self._requests or request_id in self._groups:
            raise ValueError(f"request id {request_id!r} is already in flight")
        if params.n > 1:
            for i, cid in enumerate(self._groups.add(request_id, params.n)):
                self.add_request(prompt, child_params(params, i), cid, priority)
            return request_id
        text = prompt if isinstance(prompt, str) else None
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        seq = Sequence(ids, params, request_id=request_id, priority=priority)
        self._texts.add(seq, text)
        err = self._validate(ids) or self._unsupported(params)
        if err:
            seq.status, seq.finish_reason, seq.error = SequenceStatus.FINISHED, "error", err
            self._early.append(self._finish_output(seq))
            return request_id
        if params.logprobs is not None:
            self._logprobs[seq.seq_id] = []
        if params.seed is not None:
            self._seq_generators[seq.seq_id] = torch.Generator(device=self.device).manual_seed(params.seed)
        self._requests[request_id] = seq
        self.scheduler.add(seq)
        return request_id

    def _validate(self, ids: list[int]) -> str | None:
        if not ids:
            return "empty prompt: nothing to continue from"
        if len(ids) >= self.max_model_len:
            return (f"prompt has {len(ids)} tokens but the model's maximum length is {self.max_model_len} "
                    "(prompt + at least one new token); shorten or split the input")
        vocab = self.runner.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            return f"token ids out of range for a vocabulary of {vocab}: {bad[:5]}"
        return None

    def _unsupported(self, params: SamplingParams) -> str | None:
        if self.spec is not None and (params.logprobs is not None or params.min_tokens):
            return ("logprobs and min_tokens are not implemented with speculative decoding; "
                    "send this request to an engine without speculative_method")
        return None

    def abort(self, request_id: str) -> bool:
        """Stop a request and free its blocks. Returns False if it is not in flight."""
        if request_id in self._groups:
            found = [self.abort(c) for c in self._groups.children(request_id)]
            self._groups.drop(request_id)
            return any(found)
        seq = self._requests.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.finish(seq, "abort")
        self._forget(seq)
        return True

    def progress(self, request_id: str) -> tuple[list[int], list[dict] | None] | None:
        """(tokens generated so far, their log-probs if asked) of a request in flight, for
        streaming between steps; None once it has finished or if it was never added."""
        seq = self._requests.get(request_id)
        if seq is None:
            return None
        lps = self._logprobs.get(seq.seq_id)
        return list(seq.output_token_ids), (list(lps) if lps is not None else None)

    def has_unfinished(self) -> bool:
        # A step still in flight whose requests all finished (the last step of a batch, computed
        # ahead) does not count: its tokens are dropped whenever step() next runs.
        return self.scheduler.has_unfinished() or bool(self._early)

    # ----- the loop ------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        return self._groups.merge(self._step())

    def _step(self) -> list[RequestOutput]:
        done, self._early = self._early, []
        ran = self._step_overlapped(done) if self.async_scheduling else self._step_plain(done)
        if ran is None:
            return done
        out, sampled = ran
        finished = self.scheduler.update(out, sampled)
        for s in out.scheduled:
            seq = s.seq
            new = sampled.get(seq.seq_id)
            if seq.params.stop and new and self._texts.apply_stop_strings(seq, len(new)):
                if seq.is_finished:  # also ended by EOS/length this step: the stop string came first
                    seq.finish_reason = "stop"
                else:
                    self.scheduler.finish(seq, "stop")
                    finished.append(seq)
        return done + [self._finish_output(seq) for seq in finished] + self._fail_deferred()

    def _step_plain(self, done: list) -> tuple[SchedulerOutput, dict[int, list[int]]] | None:
        """Schedule, run and sample one step; its tokens are on the host when this returns."""
        if self.spec is not None:
            self.spec.propose(self.scheduler.running)
        out = self.scheduler.schedule()
        if out.is_empty:
            return None
        try:
            logits, spans = self.runner.execute(out)
            sampled = self._sample(logits, spans, out)
        except Exception as e:  # a failed forward fails its requests, not the engine
            done.extend(self._fail(out, e))
            return None
        return out, sampled

    def _step_overlapped(self, done: list) -> tuple[SchedulerOutput, dict[int, list[int]]] | None:
        """Schedule and launch step N+1 (its placeholder inputs are read from step N's tokens on
        the device), then wait for step N's tokens: the one host sync of the step."""
        prev, self._inflight = self._inflight, None
        out = self.scheduler.schedule()
        if not out.is_empty:
            try:
                self._inflight = self._launch(out, prev)
            except Exception as e:  # fail these requests once step N's tokens are applied
                self._failed_launch = (out, e)
        if prev is None:
            done.extend(self._fail_deferred())
            return None
        try:
            sampled = prev.pending.result()
        except Exception as e:
            done.extend(self._fail(prev.out, e))
            return None
        return prev.out, sampled

    def _launch(self, out: SchedulerOutput, prev: _Launched | None) -> _Launched:
        logits, spans = self.runner.execute(out, prev.pending if prev else None)
        pending = self._sample_tensor(logits, spans, out)
        self.scheduler.launched(out)
        return _Launched(out, pending)

    def _fail(self, out: SchedulerOutput, e: Exception) -> list[RequestOutput]:
        res = []
        for s in out.scheduled:
            if s.seq.is_finished:  # async scheduling: ended by the step before this one
                continue
            s.seq.error = f"model step failed: {type(e).__name__}: {e}"
            self.scheduler.finish(s.seq, "error")
            res.append(self._finish_output(s.seq))
        return res

    def _fail_deferred(self) -> list[RequestOutput]:
        if self._failed_launch is None:
            return []
        (out, e), self._failed_launch = self._failed_launch, None
        return self._fail(out, e)

    def _sample_tensor(self, logits: torch.Tensor, spans, out: SchedulerOutput) -> PendingTokens:
        """Sample step N+1 and start its tokens (and any log-probs asked for) on their way to the
        host, without a host sync. A sequence's step-N token is still a placeholder here, so
        min_tokens counts it (`num_placeholders`)."""
        sids = [sid for sid, _, _ in spans]
        if not spans:
            return PendingTokens(torch.empty(0, dtype=torch.int64, device=self.device), sids)
        by_id = {s.seq.seq_id: s.seq for s in out.scheduled}
        seqs = [by_id[sid] for sid in sids]
        toks, rows, lp = self._sample_on_device(logits, seqs)
        pending = PendingTokens(toks, sids, aux=lp)
        if rows:
            pending.on_result = lambda host: self._logprobs.store(seqs, rows, host)
        return pending

    def _sample(self, logits: torch.Tensor, spans, out: SchedulerOutput) -> dict[int, list[int]]:
        if not spans:
            return {}
        seqs = {s.seq_id: s for s in self.scheduler.running}
        if self.spec is not None:
            return self.spec.verify(logits, spans, out, seqs)
        rows_seqs = [seqs[sid] for sid, _, _ in spans]
        toks, rows, lp = self._sample_on_device(logits, rows_seqs)
        if rows:
            self._logprobs.store(rows_seqs, rows, {k: v.cpu() for k, v in lp.items()})
        toks = toks.tolist()
        return {sid: [toks[i]] for i, (sid, _, _) in enumerate(spans)}

    def _sample_on_device(self, logits: torch.Tensor, seqs: list[Sequence]):
        """One token per row (logits: (B, V), row i for seqs[i]), left on the device, with min_tokens
        applied; and the log-probs of the rows that asked for them, from the unmasked logits."""
        masked = mask_min_tokens(logits, seqs, self.tokenizer.eos_token_ids)
        toks = _sample_rows(masked, [s.params for s in seqs], [self._seq_generators.get(s.seq_id) for s in seqs],
                            self._generator)
        rows, lp = self._logprobs.tensors(logits, seqs, toks)
        return toks, rows, lp

    def _finish_output(self, seq: Sequence) -> RequestOutput:
        self._requests.pop(seq.request_id, None)
        out = self._texts.output(seq, self._logprobs.get(seq.seq_id))
        self._forget(seq)
        return out

    def _forget(self, seq: Sequence) -> None:
        self._seq_generators.pop(seq.seq_id, None)
        self._logprobs.pop(seq.seq_id, None)
        self._texts.forget(seq)

    # ----- batch API -----------------------------------------------------------------------
    def generate(self, prompts: Seq[str] | Seq[list[int]] | str,
                 params: SamplingParams | Seq[SamplingParams] | None = None,
                 progress: bool = False, priorities: Seq[int] | None = None) -> list[RequestOutput]:
        """Runs every prompt to completion; outputs in input order. `priorities`: one per prompt
        (see add_request); default all equal."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        prio = list(priorities) if priorities is not None else [0] * len(prompts)
        if len(prio) != len(prompts):
            raise ValueError(f"got {len(prio)} priorities for {len(prompts)} prompts")
        ids = [self.add_request(p, sp, priority=pr) for p, sp, pr in zip(prompts, plist, prio)]
        mine, results, others = set(ids), {}, []
        bar = GenerateProgress(len(ids)) if progress else None
        while len(results) < len(ids) and self.has_unfinished():
            for o in self.step():
                if o.request_id not in mine:  # a request queued before this call (add_request):
                    others.append(o)  # handed back by the next step(), not swallowed here
                    continue
                results[o.request_id] = o
                if bar:
                    bar.advance(o)
        if bar:
            bar.close()
        self._early = others + self._early
        return [results[i] for i in ids]

    # ----- introspection -------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        s = asdict(self.scheduler.stats)
        s["kv_blocks"] = self.block_manager.num_blocks
        s["kv_tokens"] = self.block_manager.num_blocks * self.config.block_size
        s["kv_free_blocks"] = self.block_manager.num_free_blocks
        s["evictions"] = self.block_manager.num_evictions
        s["mean_seqs_per_step"] = s["seqs_in_steps"] / s["steps"] if s["steps"] else 0.0
        if self.spec is not None:
            s.update(self.spec.stats())
        return s


def _sample_rows(logits, params, gens, shared) -> torch.Tensor:
    from .layers.sampler import sample

    return sample(logits, [p.temperature for p in params], [p.top_k for p in params],
                  [p.top_p for p in params], gens, shared)

