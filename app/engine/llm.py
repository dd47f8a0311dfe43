"""LLM: the engine's facade. Load a checkpoint, then `generate()` or drive the step loop.

    llm = LLM("path/or/hub-id")
    outs = llm.generate(["prompt", ...], SamplingParams(max_tokens=128))

`add_request` / `step` / `has_unfinished` let callers (the doc generator's background thread)
drive continuous batching themselves; `step()` returns the requests that finished in it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from typing import Sequence as Seq

import torch

from .block_manager import BlockManager
from .config import EngineConfig, SpeculativeConfig
from .detokenizer import IncrementalDetokenizer, find_stop
from .errors import UnsupportedFeature
from .outputs import RequestOutput
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence, SequenceStatus
from .setup import build_engine_parts


class LLM:
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
        self.block_manager = BlockManager(parts.num_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(
            self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens, self.max_model_len,
            self.tokenizer.eos_token_ids,
        )
        self._generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._seq_generators: dict[int, torch.Generator] = {}
        self._requests: dict[str, Sequence] = {}
        self._prompts: dict[int, str | None] = {}
        self._detoks: dict[int, IncrementalDetokenizer] = {}  # seq_id -> its text so far (stop strings)
        self._early: list[RequestOutput] = []  # rejected requests, reported by the next step()
        self._next_id = 0
        # Speculative decoding (app/engine/spec): proposes tokens before each schedule and
        # verifies the scored rows after the forward. None when off.
        self.spec = None
        if cfg.speculative.method:
            self.spec = self._build_speculator()

    def _build_speculator(self):
        """The speculator, or (when optional) n-gram lookup instead of an unusable draft model, or
        none; the weights already loaded are kept either way."""
        from .spec import build_speculator

        cfg = self.config
        feature = "draft_model" if cfg.speculative.method == "draft" else "speculative_decoding"
        try:
            return build_speculator(cfg.speculative, self)
        except Exception as e:  # noqa: BLE001 - reported by feature name, never by traceback text
            reason = f"{type(e).__name__}: {e}"
            if feature not in cfg.optional_features:
                raise UnsupportedFeature(feature, reason) from e
        self.load_report.setdefault("disabled_features", {})[feature] = reason
        if feature == "draft_model":  # prompt lookup needs no second model
            cfg.speculative = replace(cfg.speculative, method="ngram", draft_model=None)
            return self._build_speculator()
        cfg.speculative = SpeculativeConfig()
        return None

    # ----- requests ------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Queue a request; returns its id. A request that cannot run (empty, too long) is not
        raised on: it comes back from the next `step()` with finish_reason "error"."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError("params must be a SamplingParams")
        if request_id is None:
            request_id, self._next_id = str(self._next_id), self._next_id + 1
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in flight")
        text = prompt if isinstance(prompt, str) else None
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        seq = Sequence(ids, params, request_id=request_id)
        err = self._validate(ids)
        if err:
            seq.status, seq.finish_reason, seq.error = SequenceStatus.FINISHED, "error", err
            self._early.append(self._output(seq, text))
            return request_id
        if params.seed is not None:
            self._seq_generators[seq.seq_id] = torch.Generator(device=self.device).manual_seed(params.seed)
        self._requests[request_id] = seq
        self._prompts[seq.seq_id] = text
        self.scheduler.add(seq)
        return request_id

    def _validate(self, ids: list[int]) -> str | None:
        if not ids:
            return "empty prompt: nothing to continue from"
        if len(ids) >= self.max_model_len:
            return (f"prompt has {len(ids)} tokens but the model's maximum length is {self.max_model_len} "
                    "(prompt + at least one new token); shorten or split the input")
        vocab = self.runner.model.spec.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            return f"token ids out of range for a vocabulary of {vocab}: {bad[:5]}"
        return None

    def abort(self, request_id: str) -> bool:
        """Stop a request and free its blocks. Returns False if it is not in flight."""
        seq = self._requests.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.finish(seq, "abort")
        self._forget(seq)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._early)

    # ----- the loop ------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        done, self._early = self._early, []
        if self.spec is not None:
            self.spec.propose(self.scheduler.running)
        out = self.scheduler.schedule()
        if out.is_empty:
            return done
        try:
            logits, spans = self.runner.execute(out)
            sampled = self._sample(logits, spans)
        except Exception as e:  # a failed forward fails its requests, not the engine
            for s in out.scheduled:
                s.seq.error = f"model step failed: {type(e).__name__}: {e}"
                self.scheduler.finish(s.seq, "error")
                done.append(self._finish_output(s.seq))
            return done
        finished = self.scheduler.update(out, sampled)
        for s in out.scheduled:
            seq = s.seq
            new = sampled.get(seq.seq_id)
            if seq.params.stop and new and self._apply_stop_strings(seq, len(new)):
                if seq.is_finished:  # also ended by EOS/length this step: the stop string came first
                    seq.finish_reason = "stop"
                else:
                    self.scheduler.finish(seq, "stop")
                    finished.append(seq)
        return done + [self._finish_output(seq) for seq in finished]

    def _sample(self, logits: torch.Tensor, spans) -> dict[int, list[int]]:
        if not spans:
            return {}
        seqs = {s.seq_id: s for s in self.scheduler.running}
        if self.spec is not None:
            return self.spec.verify(logits, spans, seqs, self._seq_generators, self._generator)
        params = [seqs[sid].params for sid, _, _ in spans]
        toks = _sample_rows(logits, params, [self._seq_generators.get(sid) for sid, _, _ in spans],
                            self._generator)
        return {sid: [toks[i]] for i, (sid, _, _) in enumerate(spans)}

    def _apply_stop_strings(self, seq: Sequence, num_new: int) -> bool:
        """If the output now contains a stop string, cut the tokens after the one that completed
        it (a speculative step may have added several) and remember where the text ends. The text
        grows incrementally (detokenizer.py), one token at a time, so each step costs the same
        whatever the output's length; `detokenizer.reference_stop_cut` is the full-decode original."""
        detok = self._detoks.get(seq.seq_id)
        if detok is None:
            skip = seq.params.skip_special_tokens
            detok = self._detoks[seq.seq_id] = IncrementalDetokenizer(lambda ids: self.tokenizer.decode(ids, skip))
        start = seq.num_prompt_tokens
        for pos in range(start + len(detok.ids), seq.num_tokens):  # tokens not yet seen, in order
            hit = find_stop(detok, seq.params.stop, detok.step(seq.token_ids[pos]))
            if hit is not None:
                del seq.token_ids[pos + 1:]
                seq.stop_text_index = hit
                return True
        return False

    def _finish_output(self, seq: Sequence) -> RequestOutput:
        self._requests.pop(seq.request_id, None)
        text = self._prompts.get(seq.seq_id)
        detok = self._detoks.get(seq.seq_id)
        self._forget(seq)
        return self._output(seq, text, detok)

    def _forget(self, seq: Sequence) -> None:
        self._seq_generators.pop(seq.seq_id, None)
        self._prompts.pop(seq.seq_id, None)
        self._detoks.pop(seq.seq_id, None)

    def _output(self, seq: Sequence, prompt: str | None, detok: IncrementalDetokenizer | None = None) -> RequestOutput:
        out_ids = seq.output_token_ids
        if detok is not None and len(detok.ids) == len(out_ids):  # the stop check's text: equal to a full decode
            text = detok.full_text
        else:  # no stop strings: one decode at the end costs less than one per step
            text = self.tokenizer.decode(out_ids, seq.params.skip_special_tokens) if out_ids else ""
        if seq.stop_text_index is not None:
            text = text[: seq.stop_text_index]
        m = seq.metrics.as_dict()
        m.update(prompt_tokens=seq.num_prompt_tokens, generated_tokens=len(out_ids),
                 preemptions=seq.num_preemptions)
        if seq.spec_proposed:
            v = max(seq.spec_verifications, 1)
            m.update(spec_proposed=seq.spec_proposed, spec_accepted=seq.spec_accepted,
                     spec_acceptance_rate=seq.spec_accepted / seq.spec_proposed,
                     # tokens emitted per verification step (accepted proposals + the target's own)
                     spec_mean_accepted_len=(seq.spec_accepted + v) / v)
        return RequestOutput(seq.request_id, prompt, seq.prompt_token_ids, text, out_ids, seq.finish_reason,
                             seq.num_cached_tokens, m, seq.error)

    # ----- batch API -----------------------------------------------------------------------
    def generate(self, prompts: Seq[str] | Seq[list[int]] | str,
                 params: SamplingParams | Seq[SamplingParams] | None = None,
                 progress: bool = False) -> list[RequestOutput]:
        """Runs every prompt to completion; outputs in input order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"got {len(plist)} SamplingParams for {len(prompts)} prompts")
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, plist)]
        results: dict[str, RequestOutput] = {}
        bar = _Progress(len(ids)) if progress else None
        while len(results) < len(ids) and self.has_unfinished():
            for o in self.step():
                results[o.request_id] = o
                if bar:
                    bar.advance(o)
        if bar:
            bar.close()
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


def _sample_rows(logits, params, gens, shared) -> list[int]:
    from .layers.sampler import sample

    out = sample(logits, [p.temperature for p in params], [p.top_k for p in params],
                 [p.top_p for p in params], gens, shared)
    return out.tolist()


class _Progress:
    """A rich progress bar for long generate() calls (off by default in library use)."""

    def __init__(self, total: int):
        from rich.progress import Progress

        self.p = Progress()
        self.p.start()
        self.task = self.p.add_task("generating", total=total)
        self.t0, self.tokens = time.perf_counter(), 0

    def advance(self, o: RequestOutput) -> None:
        self.tokens += len(o.token_ids)
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.p.update(self.task, advance=1, description=f"generating ({rate:.0f} tok/s)")

    def close(self) -> None:
        self.p.stop()
