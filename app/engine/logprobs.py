"""Per-request sampling extras of vLLM's API: log-probs of the chosen tokens (and the top k), and
min_tokens (no EOS or stop token before it).

Log-probs are computed on the device from the unmasked logits and copied to the host with the
sampled tokens (async scheduling hands them over with the step's one sync), then appended here.
"""
from __future__ import annotations

import torch


class Logprobs(dict):
    """seq_id -> [{"token_id", "logprob", "top": [(id, logprob), ...]}, ...] for the requests that
    asked; a request leaves it when it finishes."""

    def tensors(self, logits: torch.Tensor, seqs: list, toks: torch.Tensor):
        """(rows that asked, {"chosen": (R',), "top_v"/"top_i": (R', k), "tok": (R',)}) on the
        device; ([], None) when none asked. logits: (B, V) before any min_tokens mask."""
        rows = [i for i, s in enumerate(seqs) if s.seq_id in self]
        if not rows:
            return [], None
        idx = torch.tensor(rows, device=logits.device)
        lp = logits.index_select(0, idx).float().log_softmax(-1)
        k = max(seqs[i].params.logprobs for i in rows)
        top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
        chosen = lp.gather(1, toks.index_select(0, idx).view(-1, 1)).squeeze(1)
        return rows, {"chosen": chosen, "top_v": top_v, "top_i": top_i, "tok": toks.index_select(0, idx)}

    def store(self, seqs: list, rows: list[int], lp: dict) -> None:
        """Append one step's entries (`lp`: `tensors`' dict, on the host)."""
        tok, chosen = lp["tok"].tolist(), lp["chosen"].tolist()
        top_i, top_v = lp["top_i"].tolist(), lp["top_v"].tolist()
        for r, i in enumerate(rows):
            want, got = seqs[i].params.logprobs, self.get(seqs[i].seq_id)
            if got is None:  # finished (or aborted) while this step was in flight: its token is dropped
                continue
            got.append({"token_id": tok[r], "logprob": chosen[r], "top": list(zip(top_i[r][:want], top_v[r][:want]))})


def mask_min_tokens(logits: torch.Tensor, seqs: list, eos_ids: set[int]) -> torch.Tensor:
    """Rows still short of min_tokens cannot sample EOS or a stop token (as vLLM). A token still
    in flight (async scheduling's placeholder) counts as generated. logits: (B, V); a copy when
    any row is masked."""
    rows = [(i, s) for i, s in enumerate(seqs) if s.num_output_tokens + s.num_placeholders < s.params.min_tokens]
    if not rows:
        return logits
    logits = logits.clone()
    for i, s in rows:
        banned = sorted(eos_ids | set(s.params.stop_token_ids))
        logits[i, [t for t in banned if t < logits.shape[-1]]] = float("-inf")
    return logits
