"""RequestTexts: the text side of the requests in flight. While a request runs: its prompt text and
its incremental detokenizer, which finds stop strings as tokens arrive. When it ends: its
RequestOutput (the text cut at a stop string, a stop token's text left out, the metrics).

vLLM's rules throughout (stop_strings.py, whose `find_stop` is the full-decode reference). The
text grows incrementally (detokenizer.py), so each step's check costs the same whatever the
output's length.
"""
from __future__ import annotations

from typing import Any

from .detokenizer import IncrementalDetokenizer
from .outputs import RequestOutput
from .sequence import Sequence
from .stop_strings import find_stop_in_new_text, visible_length


class RequestTexts:
    def __init__(self, tokenizer: Any) -> None:
        """`tokenizer`: decode(ids, skip_special_tokens) and eos_token_ids (app.engine.tokenizer)."""
        self.tokenizer = tokenizer
        self._prompts: dict[int, str | None] = {}  # seq_id -> the prompt as text (None: given as ids)
        self._detoks: dict[int, IncrementalDetokenizer] = {}  # seq_id -> its text so far (stop strings)

    def add(self, seq: Sequence, prompt: str | None) -> None:
        self._prompts[seq.seq_id] = prompt

    def forget(self, seq: Sequence) -> None:
        self._prompts.pop(seq.seq_id, None)
        self._detoks.pop(seq.seq_id, None)

    def apply_stop_strings(self, seq: Sequence, num_new: int) -> bool:
        """If a new token completed a stop string, cut the tokens after it (a speculative step
        may have added several) and remember where the text ends. Returns whether one did."""
        p = seq.params
        detok = self._detoks.get(seq.seq_id)
        if detok is None:
            detok = self._detoks[seq.seq_id] = IncrementalDetokenizer(
                lambda ids: self.tokenizer.decode(ids, p.skip_special_tokens))
        start = seq.num_prompt_tokens
        for pos in range(start + len(detok.ids), seq.num_tokens):  # tokens not yet seen, in order
            before = visible_length(detok.text, detok.pending)
            changed = detok.step(seq.token_ids[pos])
            if pos - start + 1 < p.min_tokens:  # tokens before the min_tokens-th cannot complete one
                continue
            hit = find_stop_in_new_text(detok.text, detok.pending, min(before, changed), p.stop,
                                        p.include_stop_str_in_output)
            if hit is not None:
                del seq.token_ids[pos + 1:]
                seq.stop_text_index = hit
                return True
        return False

    def output(self, seq: Sequence, logprobs: list[dict] | None = None) -> RequestOutput:
        """The request's output as it stands (normally once it has finished)."""
        out_ids = seq.output_token_ids
        detok = self._detoks.get(seq.seq_id)
        if self._ended_by_stop_token(seq):  # its id stays, its text does not (vLLM)
            text = self.tokenizer.decode(out_ids[:-1], seq.params.skip_special_tokens) if len(out_ids) > 1 else ""
        elif detok is not None and len(detok.ids) == len(out_ids):  # the stop check's text: a full decode's
            text = detok.full_text
        else:  # no stop strings: one decode at the end costs less than one per step
            text = self.tokenizer.decode(out_ids, seq.params.skip_special_tokens) if out_ids else ""
        if seq.stop_text_index is not None:
            text = text[: seq.stop_text_index]
        return RequestOutput(seq.request_id, self._prompts.get(seq.seq_id), seq.prompt_token_ids, text, out_ids,
                             seq.finish_reason, seq.num_cached_tokens, _metrics(seq), seq.error,
                             logprobs[: len(out_ids)] if logprobs is not None else None)

    def _ended_by_stop_token(self, seq: Sequence) -> bool:
        """EOS or a stop token ended it: the id stays in token_ids, its text stays out (vLLM)."""
        p, out = seq.params, seq.output_token_ids
        if seq.finish_reason != "stop" or seq.stop_text_index is not None or not out or p.include_stop_str_in_output:
            return False
        return out[-1] in p.stop_token_ids or (not p.ignore_eos and out[-1] in self.tokenizer.eos_token_ids)


def _metrics(seq: Sequence) -> dict:
    m = seq.metrics.as_dict()
    m.update(prompt_tokens=seq.num_prompt_tokens, generated_tokens=len(seq.output_token_ids),
             preemptions=seq.num_preemptions)
    if seq.spec_proposed:
        v = max(seq.spec_verifications, 1)
        m.update(spec_proposed=seq.spec_proposed, spec_accepted=seq.spec_accepted,
                 spec_acceptance_rate=seq.spec_accepted / seq.spec_proposed,
                 # tokens emitted per verification step (accepted proposals + the target's own)
                 spec_mean_accepted_len=(seq.spec_accepted + v) / v)
    return m
